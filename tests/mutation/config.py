"""Which files are mutated, which tests speak for each first, and the run's limits."""

from __future__ import annotations

# Each money module, and the test files that state its rules (tier 1: run first). Tier 2 is
# every other test that runs the mutated line, fastest first.
MODULES: dict[str, tuple[str, ...]] = {
    "firmware/engine/states.py": ("tests/test_journal.py", "tests/test_state_lists.py",
                                  "tests/test_engine.py"),
    "firmware/engine/financial.py": ("tests/test_engine.py", "tests/test_money_rules.py",
                                     "tests/test_refund_advice.py", "tests/test_wrong_pin.py",
                                     "tests/test_decline_codes.py"),
    "firmware/engine/backlog.py": ("tests/test_engine.py", "tests/test_startup_backlog.py"),
    "firmware/engine/settlement.py": ("tests/test_engine.py", "tests/test_settlement_resume.py",
                                      "tests/test_settlement_wire.py"),
    "firmware/engine/codes.py": ("tests/test_engine.py", "tests/test_refund_advice.py",
                                 "tests/test_decline_codes.py"),
    "firmware/engine/validation.py": ("tests/test_engine.py", "tests/test_money_rules.py"),
    "firmware/journal/store.py": ("tests/test_journal.py", "tests/test_journal_store.py",
                                  "tests/test_state_lists.py",
                                  "tests/test_retention.py", "tests/test_money_rules.py",
                                  "tests/test_print_queue_rules.py", "tests/test_reports.py",
                                  "tests/test_diag_journal.py",
                                  "tests/test_voucher.py"),
    "firmware/host/mac.py": ("tests/test_host_mac.py", "tests/test_reply_mac.py"),
    "firmware/host/channel.py": ("tests/test_host_channel.py", "tests/test_reply_matching.py"),
    "firmware/host/messages.py": ("tests/test_host_messages.py", "tests/test_wire_conformance.py",
                                  "tests/test_reversal_fields.py", "tests/test_wire_content.py",
                                  "tests/test_reply_mac.py"),
    "firmware/ecr/protocol.py": ("tests/test_ecr_fields.py", "tests/test_bad_input.py",
                                 "tests/test_ecr_limits.py", "tests/test_ecr_replies.py"),
}

# Test files that never run firmware code in-process or through a terminal process the map
# can follow (the QEMU guests run their own copy; benchmarks are not tests).
MAP_EXCLUDE: tuple[str, ...] = ("tests/qemu", "tests/bench", "tests/mutation")

# A surviving mutant's tier 2 runs the tests of at most this many other test files, within
# this many seconds of their measured time (the files whose tests killed most of the module's
# mutants first, then the cheapest): the whole run must finish within the hour on 2 cores. A
# mutant that survives a cut tier 2 is reported as such ("tier 2 capped"), never as killed.
MAX_TIER2_FILES = 4
TIER2_BUDGET_S = 15.0
# A mutant's tests may take this many times their measured time (plus the start-up) before
# the run counts it as a hang: a mutant that loops forever is killed by the clock.
HANG_FACTOR = 4.0
HANG_GRACE_S = 20.0
# ... and one test that hangs fails after this long at least (pytest-timeout).
TEST_TIMEOUT_MIN_S = 10.0
