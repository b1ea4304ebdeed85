"""polypsynth: synthetic AD / NON_AD colonoscopy polyp images and their clinical evaluation."""

__version__ = "0.1.0"
