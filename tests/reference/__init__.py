"""Independent plain-PyTorch reference implementations of standard architectures."""
