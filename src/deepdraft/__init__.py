"""deepdraft: local-first deep research that writes a cited report while its outline grows."""

__version__ = "0.1.0"
