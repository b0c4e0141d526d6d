import pytest

from pipelines.text import find_identifiers, lemmatise, nhs_number_is_valid, normalise, redact


@pytest.mark.parametrize(
    ("text", "kind", "identifier"),
    [
        ("write to jane.doe@example.org please", "EMAIL", "jane.doe@example.org"),
        ("call me on 07700 900123 after 5", "PHONE", "07700 900123"),
        ("office (0113) 496 0000 is never answered", "PHONE", "(0113) 496 0000"),
        ("ring +44 20 7946 0958", "PHONE", "+44 20 7946 0958"),
        ("my NHS number is 943 476 5919", "NHS_NUMBER", "943 476 5919"),
        ("NHS no 9434765919.", "NHS_NUMBER", "9434765919"),
        ("NI number QQ 12 34 56 C on the form", "NI_NUMBER", "QQ 12 34 56 C"),
        ("national insurance AB123456D", "NI_NUMBER", "AB123456D"),
        ("she lives at LS1 4AP now", "POSTCODE", "LS1 4AP"),
        ("moved to sw1a 2aa last year", "POSTCODE", "sw1a 2aa"),
        ("Mrs Jane Smith was not told", "NAME", "Jane Smith"),
        ("Dr. Patel never rang back", "NAME", "Patel"),
        ("spoke to Mr. J. Bloggs", "NAME", "J. Bloggs"),
        ("Nurse Julie was kind", "NAME", "Julie"),
        ("mrs okafor visited", "NAME", "okafor"),
        ("Mrs Smithers-Jones was not told", "NAME", "Smithers-Jones"),
        ("Dr Anne-Marie Smith-Jones saw her", "NAME", "Anne-Marie Smith-Jones"),
        ("the carer never came to 12 Acacia Avenue", "ADDRESS", "12 Acacia Avenue"),
        ("she moved to 4b Mill Lane in May", "ADDRESS", "4b Mill Lane"),
        ("Flat 2, 107 Upper Kirkgate Road, Leeds", "ADDRESS", "107 Upper Kirkgate Road"),
        ("letters to 9 St. John's Close go missing", "ADDRESS", "9 St. John's Close"),
        ("parked outside 33 HIGH STREET again", "ADDRESS", "33 HIGH STREET"),
    ],
)
def test_each_identifier_kind_is_found_and_redacted(text, kind, identifier):
    assert (kind, identifier) in find_identifiers(text)
    redacted = redact([text])[0]
    assert identifier not in redacted
    assert f"[{kind}]" in redacted


@pytest.mark.parametrize(
    "text",
    [
        "we waited 10 days and then 3 weeks",
        "room 12 on floor 2, visit at 10:30 on 12/03/2024",
        "reference 1234567890 is not an NHS number",  # fails the modulus 11 check
        "the carer came 45 minutes late, 2023 was worse",
        "the nurse was kind and the doctor listened",  # roles without a name
        "As a Nurse I think the rota was wrong",
        "cost me £1500 for 6 weeks",
        "I waited 3 weeks on the road and 2 days in the lane",  # numbers, street words, no street name
        "2 visits a day, 4 Carers in total",
        "the Road to recovery took 3 Months",
    ],
)
def test_ordinary_text_and_numbers_are_not_redacted(text):
    assert find_identifiers(text) == []
    assert redact([text])[0] == normalise(text)


def test_nhs_check_digit():
    assert nhs_number_is_valid("9434765919")
    assert not nhs_number_is_valid("9434765918")
    assert not nhs_number_is_valid("1111111111")


def test_normalise_quotes_spaces_and_control_characters():
    assert normalise("It\u2019s  \u201cfine\u201d\x00\n now") == 'It\'s "fine" now'


def test_redact_keeps_order_and_handles_missing_values():
    out = redact(["call 07700 900123", None, "", "no identifiers here"])
    assert out == ["call [PHONE]", "", "", "no identifiers here"]


def test_lookup_lemmatizer_works_offline():
    assert lemmatise(["The carers were visiting", "Staff ignored my calls"]) == [
        "the carer be visit",
        "staff ignore my call",
    ]
