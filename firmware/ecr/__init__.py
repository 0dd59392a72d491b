"""The cash-register (ECR) link: newline-delimited JSON over TCP or a serial port."""
