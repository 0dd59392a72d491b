"""The receipt catalog (en, zh_CN): every word a receipt, void slip, test page or report prints
(and the report lines firmware/printing/reports.py draws for the LCD).

Paper has its own conventions, so it has its own catalog apart from firmware/i18n.py (the
screens): upper-case English and the fixed terms CUP terminals print on 签购单.
"""

from __future__ import annotations

from typing import Final

LANGS: Final = ("en", "zh_CN")

# key -> (en, zh_CN). Receipt layouts hold keys; nothing else in firmware/printing holds words.
CATALOG: Final[dict[str, tuple[str, str]]] = {
    # slip titles and marks
    "slip_title": ("POS SALES SLIP", "POS签购单"),
    "copy_merchant": ("MERCHANT COPY", "商户存根"),
    "copy_cardholder": ("CARDHOLDER COPY", "持卡人存根"),
    "copy_bank": ("BANK COPY", "银行存根"),
    "reprint": ("REPRINT", "重打印"),
    "void_slip": ("VOID", "作废"),
    "void_slip_voids": ("THE PRINTOUT ABOVE IS VOID", "以上凭条作废"),
    "void_slip_money": ("TRANSACTION NOT AFFECTED", "交易本身不受影响"),
    "void_slip_reason": ("PRINTING CANCELLED", "打印已取消"),
    "refund_declined": ("REFUND DECLINED", "退货被拒绝"),
    "refund_declined_not_made": ("THE REFUND WAS NOT MADE", "此笔退货未成功"),
    "refund_declined_stored": ("IT WAS STORED FOR SENDING AND THE HOST DECLINED IT LATER",
                               "该退货曾保存待发, 后被主机拒绝"),
    "refund_declined_todo": ("REFUND THE CUSTOMER ANOTHER WAY OR TRY AGAIN",
                             "请以其他方式退款或重新办理"),
    "host_answer": ("HOST ANSWER", "主机应答"),
    "printout": ("PRINTOUT", "凭条"),
    "copy": ("COPY", "存根联"),
    # titles of other printouts a void slip may name
    "test_page": ("PRINTER TEST", "打印机测试"),
    "held_trail": ("HELD ORDER TRAIL", "挂单记录"),
    "dereg_report": ("DEREGISTRATION REPORT", "终端注销单"),
    "settlement_report": ("SETTLEMENT REPORT", "结算报告"),
    "detail_report": ("TRANSACTION DETAIL", "交易明细"),
    # receipt fields
    "merchant_name": ("MERCHANT NAME", "商户名称"),
    "merchant_no": ("MERCHANT NO.", "商户编号"),
    "terminal_no": ("TERMINAL NO.", "终端编号"),
    "operator_no": ("OPERATOR NO.", "操作员号"),
    "card_no": ("CARD NO.", "卡号"),
    "card_org": ("CARD ORG.", "卡组织"),
    "issuer": ("ISSUER", "发卡行"),
    "acquirer": ("ACQUIRER", "收单行"),
    "exp_date": ("EXP. DATE", "有效期"),
    "txn_type": ("TRANS TYPE", "交易类型"),
    "batch_no": ("BATCH NO.", "批次号"),
    "voucher_no": ("VOUCHER NO.", "凭证号"),
    "auth_no": ("AUTH NO.", "授权码"),
    "ref_no": ("REFER NO.", "参考号"),
    "date_time": ("DATE/TIME", "日期/时间"),
    "amount": ("AMOUNT", "金额"),
    "reference": ("REFERENCE", "备注"),
    # chip (IC) slips: the application and the card's cryptogram with its verification results
    "app_label": ("APP LABEL", "应用标签"),
    "aid": ("AID", "AID"),
    "tc": ("TC", "TC"),
    "arqc": ("ARQC", "ARQC"),
    "aac": ("AAC", "AAC"),
    "tvr": ("TVR", "TVR"),
    "tsi": ("TSI", "TSI"),
    "atc": ("ATC", "ATC"),
    "orig_batch": ("ORIG BATCH NO.", "原批次号"),
    "orig_voucher": ("ORIG VOUCHER NO.", "原凭证号"),
    "orig_ref": ("ORIG REFER NO.", "原参考号"),
    "orig_auth": ("ORIG AUTH NO.", "原授权码"),
    "orig_date": ("ORIG DATE", "原交易日期"),
    "print_time": ("PRINT TIME", "打印时间"),
    "signature": ("CARDHOLDER SIGNATURE", "持卡人签名"),
    "acknowledge": ("I ACKNOWLEDGE SATISFACTORY RECEIPT OF RELATIVE GOODS/SERVICES",
                    "本人确认以上交易, 同意将其记入本卡账户"),
    "no_signature": ("NO SIGNATURE REQUIRED", "凭密码交易, 免签名"),
    # transaction kinds (keys are "kind_" + TxnKind value)
    "kind_sale": ("SALE", "消费"),
    "kind_void": ("VOID", "消费撤销"),
    "kind_refund": ("REFUND", "退货"),
    "kind_balance": ("BALANCE INQUIRY", "余额查询"),
    "kind_preauth": ("AUTH", "预授权"),
    "kind_preauth_void": ("AUTH VOID", "预授权撤销"),
    "kind_completion": ("AUTH COMPLETE", "预授权完成"),
    "kind_completion_void": ("COMPLETE VOID", "预授权完成撤销"),
    # card organisations (keys are "org_" + the code the host sends first in field 63)
    "org_CUP": ("CUP", "银联"),
    "org_VIS": ("VISA", "维萨"),
    "org_MCC": ("MASTERCARD", "万事达"),
    "org_JCB": ("JCB", "JCB"),
    "org_AMX": ("AMEX", "美国运通"),
    "org_AEX": ("AMEX", "美国运通"),
    "org_DCC": ("DINERS", "大来"),
    # entry modes, printed after the card number (keys are "entry_" + CardRead.entry_mode), as
    # CUP slips mark them: S swiped, I inserted (chip), C contactless, F fallback, M keyed
    "entry_swipe": ("S", "S"),
    "entry_chip": ("I", "I"),
    "entry_fallback": ("F", "F"),
    "entry_keyed": ("M", "M"),
    "entry_contactless": ("C", "C"),
    # the printer test page
    "firmware_version": ("FIRMWARE", "固件版本"),
    "paper_width": ("PAPER WIDTH", "纸宽"),
    "columns": ("COLUMNS", "列数"),
    "ruler": ("RULER", "标尺"),
    "charset": ("CHARACTER SET", "字符集"),
    # samples are not translated: the test page prints both whatever the language
    "sample_latin": ("The quick brown fox jumps over the lazy dog 0123456789",
                     "The quick brown fox jumps over the lazy dog 0123456789"),
    "sample_cjk": ("中国银联 商户终端 打印测试: 金额、卡号、日期。",
                   "中国银联 商户终端 打印测试: 金额、卡号、日期。"),
    "sample_cjk_row": ("一二三四五六七八九十", "一二三四五六七八九十"),
    "style_normal": ("NORMAL", "正常"),
    "style_bold": ("BOLD", "粗体"),
    "style_double": ("DOUBLE", "倍宽倍高"),
    "align_left": ("LEFT", "左对齐"),
    "align_center": ("CENTRE", "居中"),
    "align_right": ("RIGHT", "右对齐"),
    "test_end": ("END OF TEST", "测试结束"),
    # reports: settlement (Z), subtotals (X), transaction list; printed and on the LCD
    "settlement_title": ("SETTLEMENT", "结算单"),
    "subtotals_title": ("SUBTOTALS", "小计"),
    "txn_list": ("TRANSACTION LIST", "交易明细"),
    "not_settled": ("NOT SETTLED", "未结算"),
    "batch_settled": ("BATCH SETTLED", "批次已结算"),
    "settled_at": ("SETTLED AT", "结算时间"),
    "by_type": ("TOTALS BY TYPE", "按交易类型"),
    "count_amount": ("COUNT / AMOUNT", "笔数 / 金额"),
    "count": ("COUNT", "笔数"),
    "side_domestic": ("DOMESTIC CARDS", "内卡"),
    "side_foreign": ("FOREIGN CARDS", "外卡"),
    # per-type totals (keys are "total_" + TxnKind value), worded as CUP settlement slips
    "total_sale": ("SALES", "消费"),
    "total_void": ("VOIDS", "撤销"),
    "total_refund": ("REFUNDS", "退货"),
    "total_preauth": ("AUTHS", "预授权"),
    "total_preauth_void": ("AUTH VOIDS", "预授权撤销"),
    "total_completion": ("COMPLETIONS", "预授权完成"),
    "total_completion_void": ("COMPL. VOIDS", "完成撤销"),
    "net_total": ("NET", "净额"),
    "net_by_card": ("NET BY CARD", "按卡净额"),
    "host_result": ("RECONCILIATION", "对账结果"),
    # the host's answer per side in the 0510 (field 48): 1 balanced, 2 unbalanced, 3 error
    "result_1": ("BALANCED", "对账平"),
    "result_2": ("UNBALANCED", "对账不平"),
    "result_3": ("ERROR", "对账出错"),
    "result_none": ("NO RESULT", "无结果"),
    "batch_uploaded": ("BATCH UPLOADED", "批上送笔数"),
    "total": ("TOTAL", "合计"),
    "net_amount": ("NET AMOUNT", "净额"),
    "no_transactions": ("NO TRANSACTIONS", "无交易"),
    "end_of_report": ("END OF REPORT", "报表结束"),
    # record states in the transaction list (keys are "state_" + TxnState value)
    "state_APPROVED": ("APPROVED", "成功"),
    "state_VOIDED": ("VOIDED", "已撤销"),
    "state_REVERSED": ("REVERSED", "已冲正"),
    "state_REVERSAL_DUE": ("REVERSAL DUE", "待冲正"),
    "state_PENDING": ("PENDING", "未决"),
    "state_ADVICE_DUE": ("ADVICE DUE", "待上送"),
    "state_RESOLVED_MANUALLY": ("RESOLVED", "人工处理"),
    "state_DECLINED": ("DECLINED", "拒绝"),
    "state_FAILED": ("FAILED", "失败"),
    "state_QUARANTINED": ("SET ASIDE", "已隔离"),
    # the same, four cells wide for the LCD (keys are "state_short_" + TxnState value)
    "state_short_APPROVED": ("APPR", "成功"),
    "state_short_VOIDED": ("VOID", "撤销"),
    "state_short_REVERSED": ("REVD", "冲正"),
    "state_short_REVERSAL_DUE": ("RVDU", "待冲"),
    "state_short_PENDING": ("PEND", "未决"),
    "state_short_ADVICE_DUE": ("ADVD", "待送"),
    "state_short_RESOLVED_MANUALLY": ("RSLV", "人工"),
    "state_short_DECLINED": ("DECL", "拒绝"),
    "state_short_FAILED": ("FAIL", "失败"),
    "state_short_QUARANTINED": ("ASID", "隔离"),
}


def label(key: str, lang: str) -> str:
    """The words for a key in one language ("en" or "zh_CN")."""
    if lang not in LANGS:
        raise ValueError(f"receipt language must be one of {', '.join(LANGS)}, not {lang!r}")
    try:
        en, zh = CATALOG[key]
    except KeyError:
        raise KeyError(f"the receipt catalog has no text for {key!r}") from None
    return zh if lang == "zh_CN" else en


def has(key: str) -> bool:
    return key in CATALOG
