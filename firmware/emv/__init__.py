"""The contact chip (EMV / PBOC) kernel, sans-I/O: it asks for APDUs to be sent and is fed the
responses; selection, reading, offline data authentication, restrictions, CVM, risk management,
action analysis, the two GENERATE ACs, issuer authentication and scripts, and field 55."""
