"""The contact chip (EMV / PBOC) kernel, sans-I/O: it asks for APDUs to be sent and is fed the
responses; selection, reading, offline data authentication, restrictions, CVM, risk management,
action analysis, the two GENERATE ACs, issuer authentication and scripts, and field 55.

Modules: kernel.py (ChipKernel, the step table the app drives), selection.py, oda.py,
restrictions.py, cvm.py, risk.py, field55.py, tlv.py (on pyemv.tlv), apdu.py, tvr.py (named
TVR / TSI / AIP bits), params.py (CAPK and AID tables).

Our choices and limits (the EMV books leave them to the terminal, or we do less):
- Online-only: an ARQC is asked at the first GENERATE AC unless TAC/IAC denial says AAC; unable
  to go online ends in an AAC (8A = "Z3"), as CUP terminals do not approve offline.
- An expired or not yet effective application, or a service its AUC forbids here, is refused
  ("not_accepted", in words) before any cryptogram; a version mismatch only sets its TVR bit.
- Terminal risk management is performed whatever AIP byte 1 bit 4 says.
- CVM: online enciphered PIN, signature, no CVM; offline PIN is refused with the reason
  "offline PIN not supported on this terminal" and the next rule applies per its bit.
- ODA: SDA and DDA; CDA is not done (never asked at GENERATE AC). Certificate recovery is raw
  RSA (pow on integers: EMV's signature with message recovery is no padding a library offers).
- 9F33 is E0 68 C0: what this terminal does, bit for bit (manual key entry, magstripe, IC;
  online enciphered PIN, signature, no CVM; SDA, DDA), not the E0 E1 C8 many CUP terminals
  send, which would claim offline PIN and CDA to the card's CVM list. 9F35 is 22 (attended,
  offline with online capability: the CUP POS value; the kernel is online-only by its
  KernelConfig.online_only flag, which is what decides).
- Hand-written beside pyemv: a one-level TLV walker that keeps repeated tags (pyemv decodes
  into a dict), a constructed-tag header for encoding, and DOL parse/build (pyemv has none).
- Card removed before any cryptogram: "cancelled" (not a card error: it does not count
  towards fallback); after the ARQC: the card's decline of what the host said.
"""
