"""`make torture`: the terminal on the qemu board loses power at random moments, again and again.

Each cycle powers the guest on, waits for the idle screen and for the terminal to resolve what
the last cut left in doubt (reversals acknowledged), checks the books, runs a few operations
(sales, voids, refunds, pre-authorisations and completions, held orders, reprints and reports,
settlements over the ECR line; sales and settings saves typed on the keypad) and cuts the power
(SIGKILL of qemu) at a random moment in one of them. After every cut the journal is read off the
data disk and checked against the simulator's ledger (board/qemu/books.py); at the end the
terminal settles, which must balance on the first try, and the books must be equal.

    python -m board.qemu.torture --cycles 200 --seed 1234

A failing schedule is replayed with the seed it printed. Exit status 0 means no mismatch.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from board.qemu.books import TillApproval, check_disk
from board.qemu.guest import GuestError
from board.qemu.image import DEFAULT_DIR, build
from board.qemu.rig import PASSWORD, TID, QemuTerminal, is_idle_frame

CARDS = ("cup_credit", "visa", "mastercard", "cup_debit")
PINS = {"cup_debit": "123456"}


def card_of(pan_masked: str | None) -> str:
    """The test card a masked PAN belongs to: a refund goes back to the card that paid."""
    from board.sim.cards import TEST_CARDS
    from firmware.host.messages import mask_pan

    return next((name for name in CARDS if mask_pan(TEST_CARDS[name].pan) == pan_masked),
                "cup_credit")
# op -> weight; "keys_sale" and "settings_save" are typed on the keypad, the rest go over ECR.
MIX = {"sale": 30, "void": 8, "refund": 5, "preauth": 6, "completion": 4, "held_park": 6,
       "held_resume": 5, "held_cancel": 3, "reprint": 5, "report": 3, "settle": 4,
       "keys_sale": 8, "settings_save": 5}
MONEY_OPS = ("sale", "void", "refund", "preauth", "completion", "held_resume", "keys_sale")


@dataclass
class Tally:
    cycles: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    recoveries: int = 0
    mismatches: list[str] = field(default_factory=list)
    ops: Counter[str] = field(default_factory=Counter)
    boot_s: list[float] = field(default_factory=list)
    recovery_s: list[float] = field(default_factory=list)
    settlements: int = 0

    def mismatch(self, cycle: int, text: str) -> None:
        line = f"cycle {cycle}: {text}"
        self.mismatches.append(line)
        print(f"  MISMATCH {line}", flush=True)


@dataclass
class Batch:
    """What the till knows of the open batch: what it may void, refund or complete."""

    number: int = 0
    sales: list[dict[str, Any]] = field(default_factory=list)
    preauths: list[dict[str, Any]] = field(default_factory=list)


class Torture:
    def __init__(self, workdir: Path, cycles: int, seed: int, image_dir: Path) -> None:
        self.workdir = workdir
        self.cycles = cycles
        self.seed = seed
        self.rnd = random.Random(seed)
        self.image = build(image_dir, log=lambda line: None)
        self.rig = QemuTerminal(workdir, self.image, reply_timeout=3.0, log_level="WARNING")
        self.tally = Tally()
        self.till: list[TillApproval] = []
        self.batch = Batch()
        self.languages_allowed = {"en"}  # what the last settings save may have left
        self.order_refs = 0

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> int:
        print(f"torture: {self.cycles} power cuts, seed {self.seed}, work in {self.workdir}", flush=True)
        started = time.monotonic()
        self.rig.setup()
        try:
            for cycle in range(1, self.cycles + 1):
                self.cycle(cycle)
                if cycle % 10 == 0:
                    print(f"  {cycle}/{self.cycles} cycles, {time.monotonic() - started:.0f} s, "
                          f"{len(self.tally.mismatches)} mismatches", flush=True)
            self.finish()
        except Exception as error:  # the table still prints, with why the run stopped
            traceback.print_exc()
            self.tally.mismatch(self.tally.cycles, f"the run broke off: {type(error).__name__}: {error}")
        finally:
            self.rig.close()
        self.report(time.monotonic() - started)
        return 1 if self.tally.mismatches else 0

    def cycle(self, cycle: int) -> None:
        self.tally.cycles = cycle
        if self.rnd.random() < 0.08:
            # Cut while the terminal boots or recovers from the last cut.
            self.rig.start()
            time.sleep(self.rnd.uniform(1.0, 12.0))
            self.cut(cycle, "boot / recovery")
            return
        if not self.power_on(cycle):
            return
        for _ in range(self.rnd.randint(1, 5)):
            op = self.rnd.choices(list(MIX), weights=list(MIX.values()))[0]
            kill = self.rnd.random() < 0.6
            self.tally.ops[op] += 1
            phase = self.do(cycle, op, kill)
            if kill:
                self.cut(cycle, phase)
                return
        self.cut(cycle, "idle")

    def power_on(self, cycle: int) -> bool:
        rig = self.rig
        rig.start()
        assert rig.guest is not None and rig.ecr is not None
        boot = rig.wait_idle(120)
        rig.ecr.wait_listening(60)
        deadline = time.monotonic() + 90
        while True:
            status = rig.ecr.request(op="status", timeout=20)
            unresolved = status.get("unresolved", {})
            if not any(unresolved.values()) and not status.get("busy"):
                break
            if time.monotonic() > deadline:
                self.tally.mismatch(cycle, f"not resolved 90 s after power-on: {status}")
                self.cut(cycle, "stuck")
                return False
            time.sleep(0.3)
        self.tally.boot_s.append(boot)
        self.tally.recovery_s.append(time.monotonic() - rig.guest.started_at)
        self.tally.recoveries += 1
        if int(status.get("batch", 0)) != self.batch.number:
            self.batch = Batch(int(status.get("batch", 0)))  # a settlement finished meanwhile
        self.check_language(cycle)
        self.answer_print_prompts()
        return True

    def cut(self, cycle: int, phase: str) -> None:
        self.rig.power_cut()
        self.rig.sim.clear_faults()  # type: ignore[union-attr]
        self.tally.kills[phase] += 1
        for problem in check_disk(self.rig.data_disk, self.rig.sim.ledger, TID,  # type: ignore[union-attr]
                                  self.till, at_rest=False):
            self.tally.mismatch(cycle, problem)

    def finish(self) -> None:
        """A last clean start and a settlement: it must balance on the first try; books equal."""
        cycle = self.tally.cycles + 1
        if not self.power_on(cycle):
            return
        self.settle(cycle, final=True)
        self.rig.power_cut()
        self.rig.run_to_exit("true", timeout=90)  # the kernel replays the ext4 journal; clean unmount
        for problem in check_disk(self.rig.data_disk, self.rig.sim.ledger, TID,  # type: ignore[union-attr]
                                  self.till, at_rest=True):
            self.tally.mismatch(cycle, f"at the end: {problem}")

    # -- operations -------------------------------------------------------------------------------

    def do(self, cycle: int, op: str, kill: bool) -> str:
        """Runs op; with kill, returns at a random moment in it with the phase it was in."""
        if op == "keys_sale":
            return self.keys_sale(cycle, kill)
        if op == "settings_save":
            return self.settings_save(cycle, kill)
        request = self.ecr_request(op)
        if request is None:
            return self.do(cycle, "sale", kill)
        return self.ecr_op(cycle, op, request, kill)

    def ecr_request(self, op: str) -> dict[str, Any] | None:
        rnd, batch = self.rnd, self.batch
        card = rnd.choice(CARDS)
        if op == "sale":
            request: dict[str, Any] = {"op": "sale", "amount": rnd.randrange(100, 50000), "card": card}
            if card in PINS:
                request["pin"] = PINS[card]
            return request
        if op == "void" and batch.sales:
            victim = batch.sales.pop(rnd.randrange(len(batch.sales)))
            return {"op": "void", "voucher": victim["voucher"], "password": PASSWORD}
        refundable = [sale for sale in batch.sales if sale["rrn"] and sale["date"]]
        if op == "refund" and refundable:
            victim = rnd.choice(refundable)
            card = victim["card"]
            request = {"op": "refund", "amount": max(1, victim["amount"] // 4),
                       "orig_rrn": victim["rrn"], "orig_date": victim["date"],
                       "password": PASSWORD, "card": card}
            if card in PINS:
                request["pin"] = PINS[card]
            return request
        if op == "preauth":
            return {"op": "preauth", "amount": rnd.randrange(1000, 9000), "card": "visa"}
        if op == "completion" and batch.preauths:
            pa = batch.preauths.pop()
            return {"op": "completion", "voucher": pa["voucher"], "amount": pa["amount"]}
        if op == "held_park":
            self.order_refs += 1
            return {"op": "held_park", "amount": rnd.randrange(100, 20000),
                    "ref": f"T{self.seed}-{self.order_refs}"}
        if op in ("held_resume", "held_cancel"):
            orders = self.held_orders()
            if not orders:
                return None
            order = rnd.choice(orders)["id"]
            if op == "held_resume":
                return {"op": "held_resume", "order": order, "card": "visa"}
            return {"op": "held_cancel", "order": order, "reason": "customer_cancelled", "password": PASSWORD}
        if op == "reprint":
            return {"op": "reprint"}
        if op == "report":
            return {"op": "print_report", "kind": "x"}
        if op == "settle":
            return {"op": "settle", "password": PASSWORD}
        return None

    def held_orders(self) -> list[dict[str, Any]]:
        assert self.rig.ecr is not None
        reply = self.rig.ecr.request(op="held_list", timeout=30)
        return [o for o in reply.get("orders", []) if o.get("status") == "HELD" and not o.get("readonly")]

    def ecr_op(self, cycle: int, op: str, request: dict[str, Any], kill: bool) -> str:
        rig = self.rig
        assert rig.ecr is not None and rig.sim is not None
        if op == "settle" and not kill:
            self.settle(cycle)
            return "settle"
        if kill and op in MONEY_OPS and self.rnd.random() < 0.3:
            # The host answers late: the cut lands while the request is at the host.
            rig.sim.add_fault("delay", seconds=2.5, count=1)
        booked_before = len(rig.sim.ledger.rows(TID))
        request_id = rig.ecr.send(**request)
        if not kill:
            reply = rig.ecr.answer(request_id, timeout=120)
            self.learn(op, reply, cycle)
            return "done"
        # Half the cuts land in the first quarter second (request on its way, at the host), half
        # anywhere up to 2.5 s (answered, printing, the next idle).
        time.sleep(self.rnd.uniform(0.0, 0.25) if self.rnd.random() < 0.5 else self.rnd.uniform(0.0, 2.5))
        printed_before = rig.bridges["ttyS2"].from_guest
        time.sleep(0.1)
        try:
            reply = rig.ecr.answer(request_id, timeout=0.01)
        except GuestError:
            reply = None
        if reply is not None:
            self.learn(op, reply, cycle)
            printing = rig.bridges["ttyS2"].from_guest != printed_before
            return f"{self.family(op)}: {'printing' if printing else 'answered'}"
        at_host = len(rig.sim.ledger.rows(TID)) != booked_before
        return f"{self.family(op)}: {'at host' if at_host else 'before host'}"

    @staticmethod
    def family(op: str) -> str:
        if op in MONEY_OPS:
            return "money"
        if op.startswith("held"):
            return "held order"
        if op in ("reprint", "report"):
            return "print"
        return op

    def learn(self, op: str, reply: dict[str, Any], cycle: int) -> None:
        # A held order's sale answers "paid", every other money op "approved"; both name the
        # voucher number the till would type to void it.
        voucher = reply.get("voucher")
        if reply.get("result") not in ("approved", "paid") or not reply.get("ok") or voucher is None:
            return
        kind = reply.get("type", "sale" if op == "held_resume" else op)
        self.till.append(TillApproval(int(reply["batch"]), voucher, kind, int(reply["amount"])))
        known = {"voucher": voucher, "amount": int(reply["amount"]), "rrn": reply.get("rrn"),
                 "date": reply.get("date"), "card": card_of(reply.get("pan"))}
        if kind == "sale":
            self.batch.sales.append(known)
        elif kind == "preauth":
            self.batch.preauths.append(known)

    def settle(self, cycle: int, final: bool = False) -> None:
        assert self.rig.ecr is not None
        reply = self.rig.ecr.request(op="settle", password=PASSWORD, timeout=180)
        self.tally.settlements += 1
        if reply.get("result") != "settled":
            if final or reply.get("result") not in ("refused", "busy"):
                self.tally.mismatch(cycle, f"settlement did not settle: {reply}")
            return
        if (reply.get("result_domestic"), reply.get("result_foreign")) != ("1", "1"):
            self.tally.mismatch(cycle, f"settlement did not balance on the first try: {reply}")
        self.batch = Batch(self.batch.number + 1)

    # -- the keypad -------------------------------------------------------------------------------

    def wait_idle_now(self, timeout: float = 30.0) -> None:
        """Back to the idle screen: the cashier dismisses what an ECR operation left on the LCD."""
        rig = self.rig
        assert rig.lcd is not None
        for _ in range(3):
            if rig.lcd.frames and is_idle_frame(rig.lcd.frames[-1][1]):
                return
            drawn = len(rig.lcd.frames)
            rig.press("CANCEL")
            try:
                rig.lcd.wait(is_idle_frame, 2.0, since=drawn)
                return
            except GuestError:
                continue
        rig.lcd.wait(is_idle_frame, timeout, since=max(0, len(rig.lcd.frames) - 1))

    def keys_sale(self, cycle: int, kill: bool) -> str:
        rig = self.rig
        assert rig.peripherals is not None and rig.sim is not None and rig.lcd is not None
        self.wait_idle_now()
        amount = self.rnd.randrange(100, 30000)
        stop_at = self.rnd.randrange(4) if kill else None
        rig.press(str(amount))
        if stop_at == 0:
            return "keys: typing"
        rig.press("ENTER", "ENTER")
        if not rig.peripherals.reader.wait_armed(20):
            self.tally.mismatch(cycle, f"a keypad sale never armed the reader; LCD:\n{rig.lcd.screen}")
            return "keys: confirm"
        if stop_at == 1:
            return "keys: card wanted"
        booked = len(rig.sim.ledger.rows(TID))
        slips = len(rig.peripherals.printer.slips)
        rig.peripherals.reader.swipe("cup_credit")
        if stop_at == 2:
            time.sleep(self.rnd.uniform(0.0, 1.5))
            return "keys: card read"
        deadline = time.monotonic() + 60
        while len(rig.peripherals.printer.slips) < slips + 2:
            if time.monotonic() > deadline:
                self.tally.mismatch(cycle, f"a keypad sale printed no receipts; LCD:\n{rig.lcd.screen}")
                return "keys: printing"
            time.sleep(0.1)
        # The cashier saw it approved and holds the receipts: an approval that must not be lost.
        voucher = _voucher_of(rig.peripherals.printer.slips[-1].text)
        for row in rig.sim.ledger.rows(TID)[booked:]:
            if row.kind == "sale" and row.state == "approved" and row.amount == amount and voucher:
                self.till.append(TillApproval(row.batch, voucher, "sale", amount))
                self.batch.sales.append({"voucher": voucher, "amount": amount, "rrn": row.rrn,
                                         "date": row.created[5:7] + row.created[8:10],
                                         "card": card_of(row.pan_masked)})
        if stop_at == 3:
            return "keys: result shown"
        drawn = len(rig.lcd.frames)
        rig.press("ENTER")
        rig.lcd.wait(is_idle_frame, 30, since=drawn)
        return "done"

    def settings_save(self, cycle: int, kill: bool) -> str:
        """The language switch (MENU, 0 Manage, DOWN x4 to Language, ENTER): a settings save on
        the keypad."""
        rig = self.rig
        assert rig.lcd is not None
        self.wait_idle_now()
        drawn = len(rig.lcd.frames)
        rig.press("MENU", "0", "DOWN", "DOWN", "DOWN", "DOWN")
        # The menu's title says which language the terminal runs in now (the truth after a cut).
        _, menu = rig.lcd.wait_frame(lambda f: "/" in f.rows[0], 20, since=drawn)
        current = "zh_CN" if _is_chinese(menu.rows[0]) else "en"
        if current not in self.languages_allowed:
            self.tally.mismatch(cycle, f"settings: the terminal runs in {current}, the last save "
                                       f"left {' or '.join(sorted(self.languages_allowed))}")
        target = "en" if current == "zh_CN" else "zh_CN"
        self.languages_allowed = {current, target}
        drawn = len(rig.lcd.frames)
        rig.press("ENTER")
        if kill:
            time.sleep(self.rnd.uniform(0.0, 0.6))
            return "settings save"
        # Saved: the Manage menu comes back in the new language; CANCEL goes back one level at a
        # time (Manage, then the main menu) to idle.
        rig.lcd.wait(lambda f: "/" in f.rows[0] and _is_chinese(f.rows[0]) == (target == "zh_CN"),
                     20, since=drawn)
        self.languages_allowed = {target}
        drawn = len(rig.lcd.frames)
        rig.press("CANCEL", "CANCEL")
        rig.lcd.wait(is_idle_frame, 20, since=drawn)
        return "done"

    def check_language(self, cycle: int) -> None:
        """After a start, the settings are the last saved ones (or, cut mid-save, the one before)."""
        assert self.rig.lcd is not None
        screen = self.rig.lcd.screen
        if "MENU" not in screen and "菜单" not in screen:
            return  # notices took the hint row: the next settings save reads the language instead
        shown = "zh_CN" if "菜单" in screen else "en"
        if shown not in self.languages_allowed:
            self.tally.mismatch(cycle, f"settings: language {shown} after start, expected "
                                       f"{' or '.join(sorted(self.languages_allowed))}")
        self.languages_allowed = {shown}

    def answer_print_prompts(self) -> None:
        """A receipt cut by the power loss asks whether to print it again: the cashier answers."""
        assert self.rig.ecr is not None
        jobs = self.rig.ecr.request(op="print_jobs", timeout=20).get("jobs", [])
        for job in jobs:
            if job.get("needs_confirm"):
                self.rig.ecr.request(op="print_confirm", job=job["job"], print=self.rnd.random() < 0.7,
                                     timeout=20)

    # -- the summary ------------------------------------------------------------------------------

    def report(self, seconds: float) -> None:
        t = self.tally
        print(f"\ntorture summary (seed {self.seed}, {seconds / 60:.1f} min)")
        rows = [("cycles (power cuts)", str(t.cycles)),
                ("recoveries (started, resolved, checked)", str(t.recoveries)),
                ("operations", ", ".join(f"{op} {n}" for op, n in t.ops.most_common())),
                ("settlements", str(t.settlements)),
                ("approvals the till was told", str(len(self.till))),
                ("mismatches", str(len(t.mismatches)))]
        for phase, n in sorted(t.kills.items(), key=lambda item: -item[1]):
            rows.append((f"kills: {phase}", str(n)))
        if t.boot_s:
            rows.append(("power-on to idle screen (median / max)",
                         f"{_median(t.boot_s):.1f} s / {max(t.boot_s):.1f} s"))
            rows.append(("power-on to recovered (median / max)",
                         f"{_median(t.recovery_s):.1f} s / {max(t.recovery_s):.1f} s"))
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            print(f"  {label:<{width}}  {value}")
        for line in t.mismatches:
            print(f"  {line}")


def _voucher_of(slip: str) -> str | None:
    """The voucher number a receipt prints (VOUCHER NO. / 凭证号), in either language."""
    found = re.search(r"(?:VOUCHER NO\.|凭证号)\D*(\d{6})", slip)
    return found.group(1) if found else None


def _is_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m board.qemu.torture", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=int(os.environ.get("N", "200")))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=Path("var/torture"))
    parser.add_argument("--image-dir", type=Path, default=Path(os.environ.get("QEMU_IMAGE_DIR", DEFAULT_DIR)))
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    shutil.rmtree(args.workdir, ignore_errors=True)
    return Torture(args.workdir, args.cycles, seed, args.image_dir).run()


if __name__ == "__main__":
    sys.exit(main())
