"""Text from the bytes of an email, in the charset they are really in.

Mail names its charset, and the name is often smaller than the truth: "GB2312" text written
with GBK's characters, "Shift_JIS" with Microsoft's, "ISO-2022-JP" with NEC's circled numbers
(①), "ISO-8859-1" with Windows' curly quotes. Decoding with the name's codec then fails on the
first such character, and a reader that falls back to another charset for the whole text turns
every line into mojibake. So a label is read as the superset codec that mail software actually
writes under it (the WHATWG Encoding Standard's mapping, where it has one), a few bad bytes
become replacement characters where they stand instead of the whole part being read again in
another charset, and only text that fits neither its label nor UTF-8 has its charset detected
(charset-normalizer). ``Decoded.repaired`` says when the label alone did not do.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from charset_normalizer import from_bytes

# Labels for a charset that mail software writes as a larger one: decode as the larger one.
_SUPERSETS = {
    "gb2312": "gb18030",
    "gb_2312": "gb18030",
    "gb_2312-80": "gb18030",
    "euc-cn": "gb18030",
    "x-euc-cn": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "windows-936": "gb18030",
    "big5": "big5hkscs",
    "x-x-big5": "big5hkscs",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "euc-kr": "cp949",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "iso-8859-9": "cp1254",
    "latin5": "cp1254",
    "tis-620": "cp874",
    "iso-8859-11": "cp874",
}
_ISO_2022_JP = frozenset({"iso-2022-jp", "csiso2022jp", "iso-2022-jp-1", "iso-2022-jp-2"})
# A few bad bytes are damage to mark where they stand; more than this share is the wrong codec.
MAX_REPLACED_SHARE = 0.02
# Below this many bytes, charset detection guesses rather than measures.
MIN_DETECTION_BYTES = 100
FALLBACK = "cp1252"  # reads any 8-bit byte; the Western text most unlabelled mail is
# Western 8-bit charsets, which detection cannot tell apart on a short text.
_LATIN = frozenset(
    codecs.lookup(name).name
    for name in (
        "cp1250",
        "cp1252",
        "cp1254",
        "cp1257",
        "latin_1",
        "iso8859_2",
        "iso8859_3",
        "iso8859_4",
        "iso8859_9",
        "iso8859_10",
        "iso8859_13",
        "iso8859_14",
        "iso8859_15",
        "iso8859_16",
        "mac_roman",
        "mac_latin2",
        "mac_iceland",
        "mac_turkish",
        "cp437",
        "cp850",
        "cp852",
        "cp858",
        "cp860",
        "cp863",
        "cp865",
    )
)


@dataclass(frozen=True)
class Decoded:
    """Text, the codec that read it, and whether the label alone did not do."""

    text: str
    codec: str
    repaired: bool = False


def codec_for(label: str | None) -> str | None:
    """The Python codec to read text labelled ``label`` with (its superset where mail writes
    one), or None for no label or one Python does not know."""
    if not label:
        return None
    name = label.strip().strip('"').lower()
    name = _SUPERSETS.get(name, name)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode(data: bytes, label: str | None = None) -> Decoded:
    """``data`` as text: under its label (read as its superset), else UTF-8, else the detected
    charset, else Windows-1252. Never raises."""
    name = (label or "").strip().strip('"').lower()
    if name in _ISO_2022_JP:
        return _iso_2022_jp(data)
    codec = codec_for(label)
    if codec is not None and not _is_text_codec(codec):
        codec = None  # "base64", "rot13", "zlib": a name, not a charset
    if codec is not None and _single_byte(codec) and _multibyte_utf8(data):
        # UTF-8 sent under a Western label: valid multi-byte UTF-8 is no accident in 8-bit text.
        return Decoded(data.decode("utf-8"), "utf-8", repaired=True)
    if codec is not None:
        try:
            return Decoded(data.decode(codec), codec)
        except UnicodeError:
            pass
        damaged = _with_replacements(data, codec)
        if damaged is not None:
            return Decoded(damaged, codec, repaired=True)
    try:
        # Read despite its label (a wrong, unknown or non-text one): that is a repair too.
        return Decoded(data.decode("utf-8"), "utf-8", repaired=bool(name))
    except UnicodeError:
        pass
    detected = _detected(data)
    if detected is not None:
        return detected
    return Decoded(data.decode(FALLBACK, errors="replace"), FALLBACK, repaired=True)


def _single_byte(codec: str) -> bool:
    return codec.startswith(("cp125", "latin", "iso8859", "koi8", "mac-", "cp874"))


def _multibyte_utf8(data: bytes) -> bool:
    if not any(byte >= 0x80 for byte in data):
        return False
    try:
        data.decode("utf-8")
    except UnicodeError:
        return False
    return True


def _is_text_codec(codec: str) -> bool:
    """Whether a codec turns bytes into text (not "base64", "rot13" or "zlib")."""
    try:
        return codecs.lookup(codec)._is_text_encoding  # type: ignore[attr-defined,no-any-return]
    except (LookupError, AttributeError):
        return False


def _with_replacements(data: bytes, codec: str) -> str | None:
    """The text with its few undecodable bytes marked (U+FFFD), or None when they are too many
    for the codec to be the right one."""
    try:
        text = data.decode(codec, errors="replace")
    except LookupError:
        return None
    replaced = text.count("\ufffd") - data.decode(codec, errors="ignore").count("\ufffd")
    return text if replaced <= max(1, len(text) * MAX_REPLACED_SHARE) else None


def _detected(data: bytes) -> Decoded | None:
    if len(data) < MIN_DETECTION_BYTES:
        return None
    try:
        best = from_bytes(data).best()
    except Exception:  # a detector's failure is no reason to lose the text
        return None
    if best is None or best.encoding is None:
        return None
    codec = codecs.lookup(best.encoding).name
    if codec in _LATIN:
        # Between Western 8-bit charsets detection guesses ("Señor" is as likely "Seńor"):
        # Windows-1252 is what unlabelled Western mail is.
        return None
    return Decoded(str(best), codec, repaired=True)


# --- ISO-2022-JP, with the vendors' extensions ------------------------------------------------

_ESC = 0x1B
_TWO_BYTE = {b"$@", b"$B", b"$(B", b"$(Q", b"$(O"}  # JIS X 0208 (and its 2000/2004 forms)
_ONE_BYTE = {b"(B": "ascii", b"(J": "roman", b"(I": "katakana"}


def _iso_2022_jp(data: bytes) -> Decoded:
    """ISO-2022-JP read the way Japanese mail really writes it: JIS X 0208 with NEC's and IBM's
    extra rows (circled numbers, Roman numerals) and half-width katakana, which Python's codec
    refuses, and Shift_JIS mislabelled as ISO-2022-JP. JIS codes are turned into the Shift_JIS
    codes of the same characters and read with Microsoft's superset (cp932)."""
    try:
        return Decoded(data.decode("iso2022_jp"), "iso2022_jp")
    except UnicodeError:
        pass
    if any(byte >= 0x80 for byte in data) and _ESC not in data:
        # 8-bit bytes without a single escape: Shift_JIS under the wrong name.
        return Decoded(data.decode("cp932", errors="replace"), "cp932", repaired=True)
    return Decoded(_jis_as_sjis(data).decode("cp932", errors="replace"), "cp932", repaired=True)


def _jis_as_sjis(data: bytes) -> bytes:
    out = bytearray()
    mode = "ascii"
    i = 0
    while i < len(data):
        byte = data[i]
        if byte == _ESC:
            two, three = data[i + 1 : i + 3], data[i + 1 : i + 4]
            if three in _TWO_BYTE:
                mode, i = "kanji", i + 4
                continue
            if two in _TWO_BYTE:
                mode, i = "kanji", i + 3
                continue
            if two in _ONE_BYTE:
                mode, i = _ONE_BYTE[two], i + 3
                continue
        if mode == "kanji" and 0x21 <= byte <= 0x7E and i + 1 < len(data):
            second = data[i + 1]
            if 0x21 <= second <= 0x7E:
                out += _sjis_pair(byte, second)
                i += 2
                continue
        if mode == "katakana" and 0x21 <= byte <= 0x5F:
            out.append(byte + 0x80)  # half-width katakana: 0xA1-0xDF in Shift_JIS
        else:
            out.append(byte)
        i += 1
    return bytes(out)


def _sjis_pair(first: int, second: int) -> bytes:
    """The Shift_JIS bytes of a JIS X 0208 code (two bytes, 0x21-0x7E each)."""
    lead = (first + 1) // 2 + (0x70 if first <= 0x5E else 0xB0)
    odd_row = first % 2 == 1
    trail = second + (0x20 if second >= 0x60 else 0x1F) if odd_row else second + 0x7E
    return bytes((lead, trail))
