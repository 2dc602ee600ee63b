"""Parity: run every artifact and the PyTorch reference on the same inputs and compare, output by output."""
