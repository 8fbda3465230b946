"""semid: semantic IDs for joint generative search and recommendation."""

__version__ = "0.1.0"
