"""Learning from Feedback: theme tagging of complaints and learning from serious incident reviews."""

__version__ = "0.1.0"
