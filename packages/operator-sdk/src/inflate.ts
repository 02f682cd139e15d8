// A small synchronous raw-DEFLATE (RFC 1951) decoder for the two inlined
// wasm modules, which `cargo xtask wasm` stores deflated (zlib level 9) so
// the gzipped bundle is about as large as the compressed wasm instead of
// gzip-of-base64.
//
// Why not `DecompressionStream("deflate-raw")`: it is asynchronous, and the
// SDK must stay synchronous where the seed's API was: `new AudinOperator()`
// validates its configuration in the wasm core and throws `INVALID_CONFIG`
// at once, and `encodeMuLaw` & co. return their result directly. It also
// needs Chrome 80 / Safari 16.4 / Firefox 113. This decoder is ~1 KB
// gzipped and inflates the modules in a few milliseconds.
//
// Canonical Huffman decoding one bit at a time, after Mark Adler's `puff`.
// Tested against Node's zlib (tests/inflate.test.mjs).

/** Code lengths → counts per length and symbols ordered by code. */
interface Huffman {
  counts: Uint16Array;
  symbols: Uint16Array;
}

function huffman(lengths: Uint8Array, n: number): Huffman {
  const counts = new Uint16Array(16);
  const offsets = new Uint16Array(16);
  const symbols = new Uint16Array(n);
  for (let s = 0; s < n; s++) counts[lengths[s]!]!++;
  for (let len = 1; len < 15; len++) offsets[len + 1] = offsets[len]! + counts[len]!;
  for (let s = 0; s < n; s++) if (lengths[s]) symbols[offsets[lengths[s]!]!++] = s;
  return { counts, symbols };
}

// Base values and extra bits of length codes 257..285 and distance codes.
const LBASE = new Uint16Array(29);
const LEXT = new Uint8Array(29);
const DBASE = new Uint16Array(30);
const DEXT = new Uint8Array(30);
for (let i = 0, b = 3; i < 28; i++) {
  LEXT[i] = i < 8 ? 0 : (i - 4) >> 2;
  LBASE[i] = b;
  b += 1 << LEXT[i]!;
}
LBASE[28] = 258;
for (let i = 0, b = 1; i < 30; i++) {
  DEXT[i] = i < 4 ? 0 : (i - 2) >> 1;
  DBASE[i] = b;
  b += 1 << DEXT[i]!;
}
/** Order of the code length code lengths in a dynamic block header. */
const ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

/**
 * Inflates raw DEFLATE data that decodes to exactly `size` bytes.
 * @throws `Error` on malformed input or a size mismatch
 * @internal
 */
export function inflateRaw(src: Uint8Array, size: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(new ArrayBuffer(size));
  let at = 0; // next input byte
  let buf = 0; // bit buffer, LSB first
  let cnt = 0; // bits in buf
  let put = 0; // next output byte

  const bad = (): never => {
    throw new Error("audin: corrupt inlined wasm (inflate)");
  };
  const bits = (n: number): number => {
    while (cnt < n) {
      if (at >= src.length) bad();
      buf |= src[at++]! << cnt;
      cnt += 8;
    }
    const v = buf & ((1 << n) - 1);
    buf >>>= n;
    cnt -= n;
    return v;
  };
  const decode = (h: Huffman): number => {
    let code = 0;
    let first = 0;
    let index = 0;
    for (let len = 1; len < 16; len++) {
      code |= bits(1);
      const count = h.counts[len]!;
      if (code - first < count) return h.symbols[index + code - first]!;
      index += count;
      first = (first + count) << 1;
      code <<= 1;
    }
    return bad();
  };
  const codes = (lit: Huffman, dist: Huffman): void => {
    for (;;) {
      let sym = decode(lit);
      if (sym < 256) {
        if (put >= size) bad();
        out[put++] = sym;
      } else if (sym === 256) {
        return;
      } else {
        sym -= 257;
        if (sym > 28) bad();
        const len = LBASE[sym]! + bits(LEXT[sym]!);
        const d = decode(dist);
        if (d > 29) bad();
        const back = DBASE[d]! + bits(DEXT[d]!);
        if (back > put || put + len > size) bad();
        for (let i = 0; i < len; i++, put++) out[put] = out[put - back]!;
      }
    }
  };

  let fixed: [Huffman, Huffman] | undefined;
  let last = 0;
  while (!last) {
    last = bits(1);
    const type = bits(2);
    if (type === 0) {
      // Stored: the rest of the current byte is padding.
      buf = cnt = 0;
      if (at + 4 > src.length) bad();
      const len = src[at]! | (src[at + 1]! << 8);
      if ((len ^ (src[at + 2]! | (src[at + 3]! << 8))) !== 0xffff) bad();
      at += 4;
      if (at + len > src.length || put + len > size) bad();
      out.set(src.subarray(at, at + len), put);
      at += len;
      put += len;
    } else if (type === 1) {
      if (!fixed) {
        const l = new Uint8Array(288);
        l.fill(8, 0, 144).fill(9, 144, 256).fill(7, 256, 280).fill(8, 280);
        fixed = [huffman(l, 288), huffman(new Uint8Array(30).fill(5), 30)];
      }
      codes(fixed[0], fixed[1]);
    } else if (type === 2) {
      const nlen = bits(5) + 257;
      const ndist = bits(5) + 1;
      const ncode = bits(4) + 4;
      if (nlen > 286 || ndist > 30) bad();
      const lengths = new Uint8Array(320);
      for (let i = 0; i < ncode; i++) lengths[ORDER[i]!] = bits(3);
      const lencode = huffman(lengths, 19);
      lengths.fill(0);
      for (let i = 0; i < nlen + ndist; ) {
        const sym = decode(lencode);
        if (sym < 16) {
          lengths[i++] = sym;
          continue;
        }
        let value = 0;
        let repeat: number;
        if (sym === 16) {
          if (i === 0) bad();
          value = lengths[i - 1]!;
          repeat = 3 + bits(2);
        } else repeat = sym === 17 ? 3 + bits(3) : 11 + bits(7);
        if (i + repeat > nlen + ndist) bad();
        while (repeat--) lengths[i++] = value;
      }
      if (!lengths[256]) bad();
      codes(huffman(lengths, nlen), huffman(lengths.subarray(nlen), ndist));
    } else bad();
  }
  if (put !== size) bad();
  return out;
}
