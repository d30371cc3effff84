// Binary buffers as they arrive from the kernel differ by frontend: JupyterLab hands DataView,
// Colab and VS Code may hand ArrayBuffer or Uint8Array, and views may start at a byteOffset.

/** Bytes of any buffer-like value as a Uint8Array view (no copy), honouring byteOffset. */
export function toBytes(value) {
  if (value == null) return new Uint8Array(0);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  if (typeof value === "object" && value.buffer instanceof ArrayBuffer) {
    return new Uint8Array(value.buffer, value.byteOffset || 0, value.byteLength ?? value.buffer.byteLength);
  }
  throw new TypeError(`famwidget: cannot read binary data from ${Object.prototype.toString.call(value)}`);
}

/** Decode a float16 buffer (little-endian) into a Float32Array. */
export function float16ToFloat32(value) {
  const bytes = toBytes(value);
  const n = bytes.byteLength >> 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const h = bytes[2 * i] | (bytes[2 * i + 1] << 8);
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) out[i] = sign * frac * 2 ** -24;
    else if (exp === 31) out[i] = frac ? NaN : sign * Infinity;
    else out[i] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return out;
}

/** Base64 text (as embedded in standalone pages) to a Uint8Array. */
export function fromBase64(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

/** A buffer of little-endian uint16 values as a Uint16Array (copied when not 2-byte aligned). */
export function toUint16(value) {
  const bytes = toBytes(value);
  const n = bytes.byteLength >> 1;
  if (bytes.byteOffset % 2 === 0) return new Uint16Array(bytes.buffer, bytes.byteOffset, n);
  return new Uint16Array(bytes.slice(0, 2 * n).buffer);
}
