"""Key stores behind firmware.ports.KeyStore: `memory` (development key files, sim and dev boards
only) and `pkcs11` (a PKCS#11 token: SoftHSM2 in tests and `make run`, a TPM through tpm2-pkcs11
on the QEMU board, a secure element on a real board)."""
