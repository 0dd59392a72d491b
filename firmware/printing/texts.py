"""The receipt catalog (en, zh_CN): every word a receipt, void slip or test page prints.

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
    "printout": ("PRINTOUT", "凭条"),
    "copy": ("COPY", "存根联"),
    # titles of other printouts a void slip may name
    "test_page": ("PRINTER TEST", "打印机测试"),
    "settlement_report": ("SETTLEMENT REPORT", "结算报告"),
    "detail_report": ("TRANSACTION DETAIL", "交易明细"),
    # receipt fields
    "merchant_name": ("MERCHANT NAME", "商户名称"),
    "merchant_no": ("MERCHANT NO.", "商户编号"),
    "terminal_no": ("TERMINAL NO.", "终端编号"),
    "operator_no": ("OPERATOR NO.", "操作员号"),
    "card_no": ("CARD NO.", "卡号"),
    "card_org": ("CARD ORG.", "卡组织"),
    "txn_type": ("TRANS TYPE", "交易类型"),
    "batch_no": ("BATCH NO.", "批次号"),
    "voucher_no": ("VOUCHER NO.", "凭证号"),
    "trace_no": ("TRACE NO.", "流水号"),
    "auth_no": ("AUTH NO.", "授权码"),
    "ref_no": ("REFER NO.", "参考号"),
    "date_time": ("DATE/TIME", "日期/时间"),
    "amount": ("AMOUNT", "金额"),
    "reference": ("REFERENCE", "备注"),
    "orig_batch": ("ORIG BATCH NO.", "原批次号"),
    "orig_trace": ("ORIG TRACE NO.", "原流水号"),
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
    # entry modes, printed after the card number (keys are "entry_" + CardRead.entry_mode)
    "entry_swipe": ("S", "S"),
    "entry_chip": ("C", "C"),
    "entry_fallback": ("F", "F"),
    "entry_keyed": ("M", "M"),
    "entry_contactless": ("Q", "Q"),
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
