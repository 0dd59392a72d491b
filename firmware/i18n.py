"""Message catalogs (en, zh_CN) for results the terminal reports in words.

Screens, receipts and the ECR link hold keys; this module holds the sentences.
Host response codes have their own catalog in engine/codes.py.
"""

from __future__ import annotations

from typing import Any

from firmware.engine.codes import lookup

CATALOG: dict[str, tuple[str, str]] = {
    "approved": ("Approved", "交易成功"),
    "cancelled": ("Cancelled", "已取消"),
    "reversal_sent": ("Cancelled - reversal sent", "已取消 - 已冲正"),
    "reversal_pending": ("Reversal pending", "冲正待发送"),
    "advice_stored": ("Refund stored, not confirmed yet - sent when the host answers; receipt "
                      "then", "退货已保存, 尚未确认 - 主机应答后上送并出凭条"),
    "advice_declined_later": ("Stored refund declined by the host - NOT refunded",
                              "已保存的退货被主机拒绝 - 未退款"),
    "cannot_send": ("Cannot be sent - nothing was charged", "无法发送 - 未扣款"),
    "quarantined": ("Set aside: cannot be sent - supervisor must resolve",
                    "无法发送, 已隔离 - 需主管处理"),
    "resolved": ("Resolved by the supervisor (audited)", "已由主管处理 (已记录)"),
    "no_reply": ("No reply from host - nothing was charged", "主机无应答 - 未扣款"),
    "host_unreachable": ("Host unreachable - check network (F1: echo test)", "主机无法连接 - 请检查网络"),
    "host_tls_refused": ("Host certificate refused - nothing sent; call support",
                         "主机证书验证失败 - 未发送, 请联系维护"),
    "sign_on_failed": ("Sign-on failed", "签到失败"),
    "key_check_failed": ("Working key check failed - call support", "工作密钥校验失败 请联系维护"),
    "invalid_amount": ("Invalid amount", "金额无效"),
    "amount_over_limit": ("Amount over the limit", "金额超限"),
    "card_invalid": ("Card number invalid", "卡号无效"),
    "card_expired": ("Card expired", "卡已过期"),
    "insert_chip": ("Chip card - insert the card", "IC卡 - 请插卡"),
    "declined_offline": ("Declined by the card", "卡片拒绝交易"),
    "chip_not_accepted": ("Card not accepted", "不受理此卡"),
    "chip_failed": ("Chip not read: insert it again", "读芯片失败，请重新插卡"),
    "chip_failed_swipe": ("Chip not read: swipe the card", "读芯片失败，请刷卡"),
    "declined_by_card": ("Declined by the card", "卡片拒绝交易"),
    "declined_by_card_reversed": ("Declined by the card - reversal sent", "卡片拒绝 - 已冲正"),
    "declined_by_card_reversal_pending": ("Declined by the card - reversal pending",
                                          "卡片拒绝 - 冲正待发送"),
    "pin_wrong_left": ("Wrong PIN - {n} tries left", "密码错误 - 还可输入{n}次"),
    "pin_wrong_last": ("Wrong PIN - last try", "密码错误 - 最后一次"),
    "pin_tries_used": ("Wrong PIN - tries used up", "密码错误 - 次数已用完"),
    "original_not_found": ("Original transaction not found", "原交易不存在"),
    "original_wrong_type": ("Original is of another type", "原交易类型不符"),
    "original_already_voided": ("Original already voided", "原交易已撤销"),
    "original_not_approved": ("Original was not approved", "原交易未成功"),
    "original_settled": ("Original is settled - use refund", "原交易已结算, 请做退货"),
    "original_refunded": ("Original already refunded - cannot be voided", "原交易已退货, 不能撤销"),
    "original_void_open": ("Original already voided or being voided", "原交易已撤销或撤销处理中"),
    "preauth_completed": ("Pre-auth already completed", "预授权已完成"),
    "original_reference_invalid": ("Original reference number invalid (12 characters)",
                                   "原参考号无效 (应为12位)"),
    "original_date_invalid": ("Original date invalid (MMDD)", "原交易日期无效 (月月日日)"),
    "refund_over_original": ("Refund exceeds what is left of the original", "退货金额超过原交易可退余额"),
    "refund_card_differs": ("Not the card of the original - refund refused", "非原交易卡, 不能退货"),
    "completion_over_preauth": ("Completion exceeds the pre-auth", "完成金额超过预授权"),
    "password_wrong": ("Wrong supervisor password", "主管密码错误"),
    "password_locked": ("Too many wrong passwords - locked", "密码错误次数过多, 已锁定"),
    "change_password": ("Change the supervisor password first", "请先修改主管密码"),
    "journal_full": ("Storage full - not sent; call support", "存储已满 - 未发送, 请联系维护"),
    "service_mode": ("Service mode - journal damaged; call support", "维护模式 - 流水损坏, 请联系维护"),
    "settled_balanced": ("Settlement done - balanced", "结算完成 - 对账平"),
    "settled_unbalanced": ("Settlement done - unbalanced, batch uploaded", "结算完成 - 对账不平, 已批上送"),
    "settlement_interrupted": ("Settlement interrupted - will resume", "结算中断 - 将继续"),
    "settlement_no_reply": ("Settlement not done - nothing changed", "结算未完成 - 无变化"),
    "settlement_blocked": ("Settlement refused - items pending", "有未完成交易, 不能结算"),
    "busy": ("Terminal busy", "终端忙"),
    "busy_backlog": ("busy - sending reversals ({n} left)", "忙 - 正在发送冲正 (剩{n}笔)"),
    "busy_starting": ("busy - starting up, signing on", "忙 - 正在启动签到"),
    "type_disabled": ("Transaction type disabled", "交易类型未开通"),
    "deregistered": ("Terminal deregistered", "终端已注销"),
    "card_unreadable": ("Card could not be read - swipe again", "读卡失败, 请重刷"),
    "track_mismatch": ("Card data inconsistent - swipe again", "磁道数据不一致, 请重刷"),
    "keypad_unavailable": ("Keypad not answering - restart or call support", "键盘无响应 - 请重启或联系维护"),
    "reader_unavailable": ("Card reader not answering - check its cable", "读卡器无响应 - 请检查连线"),
    "sign_on_refused": ("Sign-on refused by the host - call the acquirer", "主机拒绝签到 请联系收单机构"),
    "settings_restored": ("Settings file unusable - the last good version is in use",
                          "设置文件不可用 已启用上次有效版本"),
    "settlement_resuming": ("Finishing an interrupted settlement", "正在完成中断的结算"),
    "printer_paper_out": ("Paper out - load paper and press ENTER", "打印机缺纸 - 请装纸后按确认"),
    "paper_still_out": ("Still no paper - load paper and press ENTER", "仍然缺纸 - 请装纸后按确认"),
    "printer_cover_open": ("Printer cover open - close it", "打印机盖未关 - 请关闭"),
    "printer_offline": ("Printer offline - check power and cable", "打印机离线 - 请检查电源和连线"),
    "printer_unavailable": ("Printer not answering - check cable", "打印机无响应 - 请检查连线"),
    "print_unrenderable": ("Receipt cannot be printed - record missing", "凭条无法打印 - 记录缺失"),
    "reprint_not_found": ("No receipt to reprint", "无可重打印的凭条"),
    "reprint_no_receipt": ("That transaction has no receipt", "该交易无凭条"),
    "internal_error": ("Internal error - see the log; call support", "内部错误 - 请联系维护"),
    "invalid_request": ("Request incomplete", "请求不完整"),
    "signed_on": ("Signed on", "签到成功"),
    "signed_off": ("Signed off", "签退成功"),
    "echo_ok": ("Host answered", "主机连接正常"),
    "reprint_queued": ("Reprint queued", "重打印已排队"),
    "print_resumed": ("Printing resumes", "继续打印"),
    "subtotals": ("Subtotals (not settled)", "小计 (未结算)"),
    "report_totals": ("Batch totals", "批次汇总"),
    "report_list": ("Transaction list", "交易明细"),
    "no_settlement_yet": ("No settlement yet", "尚无结算记录"),
    "settlement_not_found": ("Settlement not found", "结算记录不存在"),
    "settlement_not_finished": ("Settlement not finished - no report yet", "结算未完成, 暂无结算单"),
    "print_interrupted": ("Receipt cut by power loss - ENTER reprints, CANCEL voids",
                          "凭条因断电中断 - 确认重打, 取消作废"),
    # operators (firmware/app/core/operators.py; docs/operating.md, "Operators")
    "operator_signed_in": ("Operator signed in", "操作员已签到"),
    "operator_signed_out": ("Operator signed out", "操作员已签退"),
    "operator_pin_wrong": ("Wrong operator PIN", "操作员密码错误"),
    "operator_unknown": ("No such operator", "操作员不存在"),
    "operators_none": ("No operators are set up", "未设置操作员"),
    "operator_none_signed_in": ("No operator is signed in", "无操作员签到"),
    "operator_code_bad": ("Operator numbers are 01-99", "操作员号应为01-99"),
    "operator_exists": ("That operator exists already", "该操作员已存在"),
    "operators_saved": ("Operators saved", "操作员已保存"),
    "operator_sign_in_first": ("Operator sign-in first", "请先进行操作员签到"),
    "operator_cashier_only": ("The supervisor takes no payments - sign in as a cashier (01-99)",
                              "主管不能做交易 - 请以操作员01-99签到"),
}


def register(entries: dict[str, tuple[str, str]]) -> None:
    """A companion module's result sentences (held orders, deregistration...) join the catalog,
    so the screens and the ECR link word its outcomes like any other. A key may not change."""
    for key, pair in entries.items():
        if CATALOG.get(key, pair) != pair:
            raise ValueError(f"catalog key {key!r} is already taken with other words")
        CATALOG[key] = pair


def text(key: str, lang: str = "en", **values: Any) -> str:
    """The sentence for a catalog key (its {fields} filled from values) or a two-character
    host response code."""
    entry = CATALOG.get(key)
    if entry is not None:
        sentence = entry[1] if lang.startswith("zh") else entry[0]
        return sentence.format(**values) if values else sentence
    return lookup(key).text(lang)
