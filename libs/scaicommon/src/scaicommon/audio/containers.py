"""Which audio container an upload is: magic bytes first, declared type second (scaiecho §4.1).

Only the first bytes of a file are needed (:func:`sniff` looks at no more than 64). The
declared ``Content-Type`` and the file name are hints, used only when the bytes are
inconclusive, so MP3 bytes labelled ``audio/wav`` are still MP3.
"""

from __future__ import annotations

from typing import Final

ACCEPTED_EXTENSIONS: Final = ("wav", "mp3", "flac", "ogg", "m4a", "webm")

# MIME type -> staging extension, exactly scaiecho §4.1 step 5.
ACCEPTED_MIME: Final[dict[str, str]] = {
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/ogg": "ogg",
    "audio/ogg;codecs=opus": "ogg",
    "audio/opus": "ogg",
    "audio/mp4": "m4a",
    "audio/m4a": "m4a",
    "audio/x-m4a": "m4a",
    "audio/aac": "m4a",
    "audio/webm": "webm",
}

_CANONICAL_MIME: Final[dict[str, str]] = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "m4a": "audio/mp4",
    "webm": "audio/webm",
}

# File-name extensions taken as hints, beyond the staging extensions themselves.
_EXTENSION_HINTS: Final[dict[str, str]] = {
    **{ext: ext for ext in ACCEPTED_EXTENSIONS},
    "wave": "wav",
    "oga": "ogg",
    "opus": "ogg",
    "mp4": "m4a",
    "aac": "m4a",
}

# ISO-BMFF brands (major or compatible) of audio-bearing MP4/M4A/3GP files.
_BMFF_BRAND_PREFIXES: Final = (
    b"M4A",
    b"M4B",
    b"M4P",
    b"mp4",
    b"mp7",
    b"iso",
    b"3gp",
    b"3g2",
    b"dash",
    b"avc1",
    b"f4a",
    b"F4A",
    b"qt  ",
    b"MSNV",
)

_EBML_MAGIC: Final = b"\x1a\x45\xdf\xa3"


def _is_adts(head: bytes) -> bool:
    """An ADTS AAC frame header: 12-bit sync, layer 00, a real sampling-rate index."""
    if len(head) < 3 or head[0] != 0xFF or (head[1] & 0xF6) != 0xF0:
        return False
    return ((head[2] >> 2) & 0x0F) <= 12


def _is_mpeg_audio_frame(head: bytes) -> bool:
    """An MPEG-1/2/2.5 layer II or III frame header with a usable bitrate and rate."""
    if len(head) < 3 or head[0] != 0xFF or (head[1] & 0xE0) != 0xE0:
        return False
    version = (head[1] >> 3) & 0x03
    layer = (head[1] >> 1) & 0x03
    bitrate_index = head[2] >> 4
    rate_index = (head[2] >> 2) & 0x03
    return (
        version != 0b01  # reserved
        and layer in (0b01, 0b10)  # layer III, layer II
        and bitrate_index not in (0x0, 0xF)  # free-format and "bad" refused
        and rate_index != 0b11
    )


def _is_bmff_audio(head: bytes) -> bool:
    """An ISO-BMFF ``ftyp`` box at offset 4 whose brands are MP4/M4A/3GP ones."""
    if len(head) < 12 or head[4:8] != b"ftyp":
        return False
    box_size = int.from_bytes(head[0:4], "big")
    end = min(len(head), box_size) if box_size >= 16 else 12
    brands = [head[8:12]] + [head[i : i + 4] for i in range(16, end - 3, 4)]
    return any(brand.startswith(_BMFF_BRAND_PREFIXES) for brand in brands)


def sniff(head: bytes) -> str | None:
    """The container extension the magic bytes show, or None when they are inconclusive."""
    if len(head) >= 12 and head[0:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(_EBML_MAGIC):
        return "webm"
    if _is_bmff_audio(head):
        return "m4a"
    if head.startswith(b"ID3"):
        return "mp3"
    if _is_adts(head):
        return "m4a"
    if _is_mpeg_audio_frame(head):
        return "mp3"
    return None


def extension_for_mime(content_type: str | None) -> str | None:
    """The staging extension of a declared ``Content-Type`` (case and parameters ignored)."""
    if not content_type:
        return None
    base = content_type.split(";", 1)[0].strip().lower()
    return ACCEPTED_MIME.get(base)


def extension_for_filename(filename: str | None) -> str | None:
    """The staging extension a file name suggests (``.oga``/``.opus`` → ogg, ``.aac`` → m4a)."""
    if not filename or "." not in filename:
        return None
    suffix = filename.rsplit(".", 1)[1].strip().lower()
    return _EXTENSION_HINTS.get(suffix)


def detect_container(head: bytes, content_type: str | None, filename: str | None) -> str | None:
    """The upload's container: sniffed bytes, else the Content-Type, else the file name.

    Returns one of :data:`ACCEPTED_EXTENSIONS`, or None when the upload is unsupported.
    """
    return sniff(head) or extension_for_mime(content_type) or extension_for_filename(filename)


def mime_for(ext: str) -> str:
    """The canonical MIME type of a staging extension; ``ValueError`` for an unknown one."""
    try:
        return _CANONICAL_MIME[ext.lower()]
    except KeyError:
        raise ValueError(f"unknown audio extension {ext!r}") from None
