"""Mail in the charsets it really uses: each kind of mislabelled text read right, from
fixtures of our own (tests/data/emails), and mail.charsets' rules one by one."""

from __future__ import annotations

from pathlib import Path

import pytest

from mail import charsets
from mail.parsing import parse_email

EMAILS = Path(__file__).parent / "data" / "emails"


@pytest.mark.parametrize(
    ("fixture", "subject", "sender", "body_starts"),
    [
        # GB2312 on the label, GBK's characters (镕, 喆) in the text, the subject and the name.
        (
            "gb2312_with_gbk_characters.eml",
            "退款：朱镕基的重复扣款",
            ("王喆", "wang@example.cn"),
            "您好，朱镕基先生和王喆女士这个月被扣了两次费用",
        ),
        # ISO-2022-JP with NEC's circled numbers, which Python's codec refuses.
        (
            "iso_2022_jp_nec_extensions.eml",
            "二重請求①について",
            ("Taro Yamada", "taro@example.jp"),
            "お世話になっております。①今月の請求が二重です。②返金をお願いします。",
        ),
        # Shift_JIS bytes in an encoded word labelled ISO-2022-JP.
        (
            "shift_jis_in_iso_2022_jp_word.eml",
            "返金のお願い",
            ("Hanako", "hanako@example.jp"),
            "返金をお願いします。",
        ),
        # One invalid byte in a UTF-8 Cyrillic body: one replacement character, not cp1252.
        (
            "utf8_cyrillic_one_invalid_byte.eml",
            "Двойное списание",
            ("Ivan", "ivan@example.ru"),
            "Здравствуйте! С моей карты дважды списали оплату",
        ),
        # A body with no charset at all (KOI8-R) and a raw 8-bit UTF-8 subject.
        (
            "unlabelled_koi8_r_body.eml",
            "Возврат платежа",
            ("Olga", "olga@example.ru"),
            "Здравствуйте! С моей карты дважды списали оплату",
        ),
    ],
)
def test_mislabelled_mail_is_read_right(fixture, subject, sender, body_starts):
    parsed = parse_email((EMAILS / fixture).read_bytes())
    assert parsed.subject == subject
    assert (parsed.from_name, parsed.from_address) == sender
    assert parsed.text.startswith(body_starts)


def test_one_invalid_byte_is_one_replacement_character_where_it_stands():
    parsed = parse_email((EMAILS / "utf8_cyrillic_one_invalid_byte.eml").read_bytes())
    assert parsed.text.count("\ufffd") == 1
    assert parsed.text.rstrip().endswith("\ufffd Спасибо, Иван")


@pytest.mark.parametrize(
    ("text", "encoding", "label", "codec", "repaired"),
    [
        ("朱镕基", "gbk", "gb2312", "gb18030", False),  # the label's superset is no repair
        ("It’s “quoted”", "cp1252", "iso-8859-1", "cp1252", False),  # Windows' quotes
        ("①②", "cp932", "shift_jis", "cp932", False),
        ("Grüße", "utf-8", "iso-8859-1", "utf-8", True),  # UTF-8 under a Western label
        ("plain", "ascii", "x-unknown-charset", "utf-8", True),
        ("plain", "ascii", "base64", "utf-8", True),  # a codec, not a charset: ignored
        ("Señor Muñoz", "cp1252", None, "cp1252", True),  # short Western: no guessing
    ],
)
def test_decode_picks_the_codec_the_bytes_are_in(text, encoding, label, codec, repaired):
    decoded = charsets.decode(text.encode(encoding), label)
    assert (decoded.text, decoded.codec, decoded.repaired) == (text, codec, repaired)


def test_a_longer_unlabelled_text_has_its_charset_detected():
    text = (
        "您好，我的信用卡这个月被扣了两次费用，请帮我查一下并退还重复扣除的款项。"
        "我的账户邮箱是这个地址，谢谢您的帮助。"
    )
    decoded = charsets.decode(text.encode("gbk"))
    assert decoded.text == text and decoded.repaired


def test_text_that_fits_nothing_is_still_text():
    decoded = charsets.decode(bytes(range(256)) * 4, "utf-8")
    assert isinstance(decoded.text, str) and decoded.repaired
    assert charsets.decode(b"", "gb2312").text == ""
