"""The sentences of the transaction screens and the menu tree (en, zh_CN), and the small lookups
they share: a key or plain words in the screen's language, the currency label, money rows.

Screens hold the keys below; anything not here falls back to firmware.i18n and the host codes.
"""

from __future__ import annotations

from typing import Any

from firmware.engine.codes import CODES
from firmware.i18n import CATALOG as SHARED_CATALOG
from firmware.ui import core

CATALOG: dict[str, tuple[str, str]] = {
    # operation titles (title rows, working screens, results)
    "op_sale": ("Sale", "消费"),
    "op_void": ("Void", "消费撤销"),
    "op_refund": ("Refund", "退货"),
    "op_balance": ("Balance", "余额查询"),
    "op_preauth": ("Pre-auth", "预授权"),
    "op_completion": ("Completion", "预授权完成"),
    "op_preauth_void": ("Pre-auth void", "预授权撤销"),
    "op_completion_void": ("Completion void", "完成撤销"),
    "op_settle": ("Settlement", "结算"),
    "op_update": ("Update", "固件升级"),  # a firmware update a till started (ECR `update`)
    "op_subtotals": ("Subtotals", "结算小计"),
    "op_reprint_settlement": ("Last settlement", "重打结算单"),
    "op_reprint_last": ("Reprint last", "重打上笔"),
    "op_reprint_voucher": ("Reprint voucher", "按凭证号重打"),
    "op_report_list": ("Transactions", "交易明细"),
    "op_report_totals": ("Totals", "交易汇总"),
    "op_sign_on": ("Sign on", "签到"),
    "op_sign_off": ("Sign off", "签退"),
    "op_echo": ("Echo test", "回响测试"),
    "op_print_resume": ("Resume printing", "继续打印"),
    "op_held_resume": ("Held order sale", "挂单支付"),
    "op_held_cancel": ("Cancel held", "取消挂单"),
    "src_ecr": ("ECR: {op}", "收银机: {op}"),
    "src_system": ("System: {op}", "系统: {op}"),
    # menus (an item row is "1 " + label, so labels keep to 13 cells; submenus add " >")
    "menu_main": ("Menu", "主菜单"),
    "menu_preauth": ("Pre-auth", "预授权类"),
    "menu_settlement": ("Settlement", "结算"),
    "menu_reprint": ("Reprint", "重打印"),
    "menu_reports": ("Reports", "报表"),
    "menu_settings": ("Settings", "设置"),
    "menu_diag": ("Diagnostics", "系统诊断"),
    "menu_manage": ("Manage", "管理"),
    "menu_language": ("Language", "语言 Language"),
    "menu_about": ("About", "关于"),
    "menu_operators": ("Operators", "操作员管理"),
    "menu_sign_out": ("Op. sign-out", "操作员签退"),
    "menu_tills": ("ECR tills", "收银机配对"),
    "item_completion_void": ("Compl. void", "完成撤销"),
    "item_settle": ("Settle", "结算"),
    "item_reprint_settlement": ("Settle reprint", "重打结算单"),
    "item_reprint_last": ("Last receipt", "重打上笔"),
    "item_reprint_voucher": ("Voucher no.", "按凭证号"),
    # idle
    "hint_idle": ("MENU  F1 Sale", "菜单  F1 消费"),
    "hint_idle_more": ("F2 Void  F3 Settle", "F2 撤销  F3 结算"),
    "hint_idle_more2": ("F4 Reprint last", "F4 重打上笔"),
    "rev_adv": ("REV {rev} ADV {adv}", "冲正{rev} 通知{adv}"),
    "idle_operator": ("Operator {code}", "操作员 {code}"),
    "held_aged": ("{n} held order(s) old", "{n}笔挂单已超时"),
    "idle_quarantined": ("{n} set aside: see review", "{n}笔已隔离: 见结算检查"),
    "idle_refunds_declined": ("{n} stored refund(s) DECLINED: not refunded",
                              "{n}笔保存的退货被拒: 未退款"),
    "idle_backlog": ("Sending reversals: {n} left", "正在发送冲正: 剩{n}笔"),
    "menu_held": ("Held orders", "挂单"),
    "item_held_park": ("Park order", "挂单"),
    "item_held_list": ("Held list", "挂单列表"),
    "menu_deregister": ("Deregister", "终端注销"),
    "title_card": ("Card reader", "读卡器"),
    "banner_deregistered": ("DEREGISTERED", "终端已注销"),
    # entries
    "enter_amount": ("Enter amount", "请输入金额"),
    "amount_max": ("Max {max}", "最大 {max}"),
    "amount_zero": ("Enter an amount", "请输入金额"),
    "enter_voucher": ("Voucher no.", "原凭证号"),
    "amount_no_dot": ("No dot: 123=1.23", "无需小数点"),
    "tear_off_next": ("Tear off the copy, ENTER prints the next", "请撕下存根, 按确认打印下一联"),
    "enter_rrn": ("Orig. ref. no.", "原参考号"),
    "enter_date": ("Orig. date MMDD", "原交易日期(月日)"),
    "enter_preauth_voucher": ("Pre-auth voucher", "预授权凭证号"),
    "digits_exact": ("Need {n} digits", "需要{n}位数字"),
    "digits_range": ("Need {lo}-{hi} digits", "需要{lo}-{hi}位数字"),
    "date_invalid": ("Not a valid date", "日期无效"),
    "enter_password": ("Supervisor pwd", "请输入主管密码"),
    "checking": ("Checking...", "验证中..."),
    "wrong_password": ("Wrong password", "密码错误"),
    "locked_for": ("Locked - try again in {left}", "已锁定, {left}后重试"),
    "password_length": ("6-12 digits", "密码为6-12位"),
    "pwd_void": ("Void", "撤销类交易"),
    "pwd_refund": ("Refund", "退货"),
    "pwd_settlement": ("Settlement", "结算"),
    "pwd_settings": ("Settings", "设置"),
    "pwd_other": ("Supervisor", "主管"),
    "enter_pin": ("Enter PIN", "请输入密码"),
    "pin_length": ("PIN 4-12 digits", "密码为4-12位"),
    "pin_required": ("PIN required", "必须输入密码"),
    "pin_bypass": ("ENTER: no PIN", "确认: 免密"),
    "confirm_enter": ("ENTER confirm", "按确认键继续"),
    "enter_continue": ("ENTER: continue", "按确认键继续"),
    "res_paper_out": ("Receipt-no paper", "凭条待打印: 缺纸"),  # one 16-cell row
    "settle_ask": ("Settle batch? ENTER", "确认结算? 按确认"),
    # working
    "step_wait": ("Please wait...", "请稍候..."),
    "step_card": ("Insert chip or\nswipe card", "请插卡或刷卡"),  # "swipe card" kept on one row
    "step_chip": ("Card inserted", "已插卡"),
    "step_chip_reading": ("Reading card - do not remove", "读卡中 请勿拔卡"),
    "step_chip_choose": ("Choose app", "请选择应用"),
    "step_chip_completing": ("Do not remove card", "请勿拔卡"),
    "step_remove_card": ("Please remove card", "请拔卡"),
    "note_insert_chip": ("Insert the card", "请插入IC卡"),  # one row: a chip card was swiped
    "step_pin": ("PIN entry...", "等待输入密码..."),
    "step_pin_pad": ("Enter PIN on the PIN pad", "请在密码键盘上输入密码"),
    "step_connecting": ("Connecting... {s}s", "连接中... {s}秒"),
    "step_sending": ("Processing... {s}s", "处理中... {s}秒"),
    "step_reversing": ("Reversing...", "冲正中..."),
    "step_advice": ("Sending advice...", "上送通知..."),
    "step_upd_checking": ("Checking the update file", "校验升级包"),
    "step_upd_writing": ("Writing {done}%: do not switch off", "写入{done}% 勿关机"),
    "step_uploading": ("Uploading {done}/{total}", "批上送 {done}/{total}"),
    "step_settling": ("Settling...", "结算中..."),
    "step_printing": ("Printing {done}/{total}", "打印中 {done}/{total}"),
    "step_signing_on": ("Signing on...", "签到中..."),
    "cancelling": ("Cancelling...", "正在取消..."),
    "cannot_cancel": ("Cannot cancel now", "现在不能取消"),
    # results
    "res_declined": ("Declined", "交易拒绝"),
    "res_failed": ("Failed", "交易失败"),
    "res_done": ("Done", "完成"),
    "res_unknown": ("Outcome: {status}", "结果: {status}"),
    "res_code": ("Code {code}", "应答码 {code}"),
    "res_auth": ("Auth {code}", "授权码 {code}"),
    "res_voucher": ("Voucher {voucher}", "凭证号 {voucher}"),
    "res_rrn": ("Ref {rrn}", "参考号 {rrn}"),
    "res_batch": ("Batch {batch}", "批次号 {batch}"),
    "res_date": ("Date {date}", "原交易日期 {date}"),
    "res_balance": ("Balance", "余额"),
    "orig_amount": ("Orig. {amount}", "原金额 {amount}"),
    "host_unreachable": ("Host unreachable - check network", "主机无法连接 - 请检查网络"),
    "f1_echo": ("F1: echo test", "F1: 回响测试"),
    # language and about
    "saving": ("Saving...", "保存中..."),
    "language_not_saved": ("Language not saved", "语言未保存"),
    "reading": ("Reading...", "读取中..."),
}

CURRENCIES = {"156": "CNY", "344": "HKD", "446": "MOP", "840": "USD", "978": "EUR"}


def t(ctx: core.UiContext, key: str, **values: Any) -> str:
    """A key of this catalog (or the shared one) in the screen's language."""
    return core.say(CATALOG, key, ctx.lang, **values)


def words(ctx: core.UiContext, key_or_words: str) -> str:
    """A catalog key in the screen's language, or plain words passed through as they are
    (ctx.notice and titles may be either; an unknown key must not read "Transaction failed")."""
    if key_or_words in CATALOG or key_or_words in SHARED_CATALOG or key_or_words in CODES:
        return t(ctx, key_or_words)
    return key_or_words


def op_title(ctx: core.UiContext, op: str) -> str:
    return t(ctx, f"op_{op}") if f"op_{op}" in CATALOG else op


def money(ctx: core.UiContext, amount: int) -> str:
    code = str(ctx.setting("transactions", "currency", "156"))
    return f"{CURRENCIES.get(code, code)} {core.format_fen(amount)}"


def max_amount(ctx: core.UiContext) -> int:
    return int(ctx.setting("transactions", "max_amount", 10_000_000))


def enabled(ctx: core.UiContext, txn_type: str) -> bool:
    """Whether settings enable this transaction type (no list configured: everything is)."""
    types = ctx.setting("transactions", "enabled", None)
    return types is None or txn_type in types
