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

const ITEM = { uint8: 1, uint16: 2, float16: 2, float32: 4 };

/**
 * A buffer as the array it declares: {data, shape} with data a Uint8Array (uint8), Uint16Array
 * (uint16), or Float32Array (float16 decoded, float32), all little-endian. Throws an Error when
 * the shape or dtype is not one it knows, or when the byte length does not match the shape
 * (the same check as famwidget/widget/wire.py decode): never a wrong shape.
 */
export function decodeArray(value, shape, dtype = "uint8") {
  if (!Object.hasOwn(ITEM, dtype)) throw new Error(`famwidget: unknown dtype ${String(dtype)}`);
  if (!Array.isArray(shape) || !shape.every((n) => Number.isSafeInteger(n) && n >= 0)) {
    throw new Error(`famwidget: a shape is a list of integers >= 0, got ${JSON.stringify(shape)}`);
  }
  const bytes = toBytes(value);
  const need = shape.reduce((a, n) => a * n, 1) * ITEM[dtype];
  if (bytes.byteLength !== need) {
    throw new Error(`famwidget: a ${dtype} buffer of shape [${shape}] has ${need} bytes, this one ${bytes.byteLength}`);
  }
  if (dtype === "uint8") return { data: bytes, shape };
  if (dtype === "uint16") return { data: toUint16(bytes), shape };
  if (dtype === "float16") return { data: float16ToFloat32(bytes), shape };
  const copy = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  const view = new DataView(copy.buffer, copy.byteOffset, copy.byteLength);
  const data = new Float32Array(need / 4);
  for (let i = 0; i < data.length; i++) data[i] = view.getFloat32(4 * i, true);
  return { data, shape };
}
