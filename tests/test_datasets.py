import pytest

from pipelines.datasets import DatasetError, dataset_path, fetch_fft_phase1, fetch_fft_v6, fetch_pfd_reports


def test_public_loaders_read_and_verify(public_data_dir):
    fft = fetch_fft_phase1(public_data_dir)
    assert len(fft) == 10_302 and fft["label"].nunique() == 9
    v6 = fetch_fft_v6(public_data_dir)
    assert {"text", "labels"} <= set(v6.columns) and v6["labels"].str.contains(";").any()
    pfd = fetch_pfd_reports(public_data_dir)
    assert len(pfd) == 213 and "concerns" in pfd.columns


def test_missing_dataset_says_where_to_put_it(tmp_path):
    with pytest.raises(DatasetError, match="nhs_fft_phase1.csv not found in .*LFF_PUBLIC_DATA_DIR"):
        fetch_fft_phase1(tmp_path)


def test_wrong_file_fails_the_checksum(tmp_path):
    (tmp_path / "nhs_fft_phase1.csv").write_text("code,label,feedback\nxn,Couldn't be improved,Nothing.\n")
    with pytest.raises(DatasetError, match="sha256"):
        dataset_path("nhs_fft_phase1.csv", tmp_path)
