// Property tests of the decoder (js/buffers.js) with fast-check: any byte string, in any of the
// buffer kinds hosts hand over, either decodes to the declared shape or throws an Error; never
// another exception, a hang or a wrong shape.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeArray, float16ToFloat32, fromBase64, toBytes, toUint16 } from "../../js/buffers.js";

const DTYPES = ["uint8", "uint16", "float16", "float32"];
const ITEM = { uint8: 1, uint16: 2, float16: 2, float32: 4 };
const RUNS = { numRuns: 300 };

/** The same bytes as the buffer kinds hosts hand over, at any byteOffset. */
const carrier = fc.tuple(fc.uint8Array({ maxLength: 96 }), fc.nat(7), fc.constantFrom("u8", "dv", "ab", "u16"))
  .map(([bytes, pad, kind]) => {
    const backing = new Uint8Array(pad + bytes.length + 3);
    backing.set(bytes, pad);
    if (kind === "ab") return { bytes, value: backing.slice(pad, pad + bytes.length).buffer };
    if (kind === "dv") return { bytes, value: new DataView(backing.buffer, pad, bytes.length) };
    if (kind === "u16" && bytes.length % 2 === 0) {
      return { bytes, value: new Uint16Array(backing.slice(pad, pad + bytes.length).buffer) };
    }
    return { bytes, value: new Uint8Array(backing.buffer, pad, bytes.length) };
  });
const shape = fc.array(fc.nat(6), { maxLength: 4 });

describe("decodeArray", () => {
  it("any bytes decode to the declared shape or throw an Error", () => {
    fc.assert(fc.property(carrier, shape, fc.constantFrom(...DTYPES), ({ bytes, value }, dims, dtype) => {
      const count = dims.reduce((a, n) => a * n, 1);
      let out;
      try {
        out = decodeArray(value, dims, dtype);
      } catch (error) {
        expect(error).toBeInstanceOf(Error);
        expect(error.message).toMatch(/famwidget: a \w+ buffer of shape .* has \d+ bytes, this one \d+/);
        expect(bytes.length).not.toBe(count * ITEM[dtype]); // refused only when it does not fit
        return;
      }
      expect(bytes.length).toBe(count * ITEM[dtype]);
      expect(out.shape).toEqual(dims);
      expect(out.data.length).toBe(count);
      if (dtype === "uint8") expect(Array.from(out.data)).toEqual(Array.from(bytes));
      if (dtype === "uint16") {
        for (let i = 0; i < count; i++) expect(out.data[i]).toBe(bytes[2 * i] | (bytes[2 * i + 1] << 8));
      }
      if (dtype === "float32") {
        const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        for (let i = 0; i < count; i++) expect(Object.is(out.data[i], view.getFloat32(4 * i, true)) || Number.isNaN(out.data[i])).toBe(true);
      }
    }), RUNS);
  });

  it("any shape or dtype value that is not one it knows throws an Error", () => {
    const weird = fc.oneof(fc.anything(), fc.array(fc.oneof(fc.double(), fc.integer({ min: -5, max: -1 })), { minLength: 1 }));
    fc.assert(fc.property(weird, fc.oneof(fc.constantFrom(...DTYPES), fc.string()), (dims, dtype) => {
      const ok = Array.isArray(dims) && dims.every((n) => Number.isSafeInteger(n) && n >= 0) && DTYPES.includes(dtype);
      try {
        const out = decodeArray(new Uint8Array(0), dims, dtype);
        expect(ok).toBe(true);
        expect(out.data.length).toBe(0);
      } catch (error) {
        expect(error).toBeInstanceOf(Error);
      }
    }), RUNS);
  });

  it("the numbers that Python's wire.encode_points writes decode back", () => {
    fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 65535 }), { maxLength: 40 }), (values) => {
      const even = values.length % 2 ? values.slice(1) : values;
      const bytes = new Uint8Array(even.flatMap((v) => [v & 255, v >> 8]));
      const out = decodeArray(new DataView(bytes.buffer), [even.length / 2, 2], "uint16");
      expect(Array.from(out.data)).toEqual(even);
    }), RUNS);
  });
});

describe("the other decoders are total", () => {
  it("toBytes, toUint16 and float16ToFloat32 read any buffer kind without throwing", () => {
    fc.assert(fc.property(carrier, ({ bytes, value }) => {
      expect(Array.from(toBytes(value))).toEqual(Array.from(bytes));
      expect(toUint16(value).length).toBe(bytes.length >> 1);
      const halves = float16ToFloat32(value);
      expect(halves.length).toBe(bytes.length >> 1);
    }), RUNS);
  });

  it("toBytes refuses anything that is not a buffer with a TypeError", () => {
    const notBuffers = fc.oneof(fc.string(), fc.integer(), fc.boolean(), fc.array(fc.nat()), fc.object());
    fc.assert(fc.property(notBuffers, (value) => {
      expect(() => toBytes(value)).toThrow(TypeError);
    }), RUNS);
  });

  it("fromBase64 decodes valid base64 and throws an Error on anything else", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      const text = Buffer.from(bytes).toString("base64");
      expect(Array.from(fromBase64(text))).toEqual(Array.from(bytes));
    }), RUNS);
    fc.assert(fc.property(fc.string({ maxLength: 20 }), (text) => {
      try {
        fromBase64(text);
      } catch (error) {
        expect(error).toBeInstanceOf(Error);
      }
    }), RUNS);
  });
});
