import { describe, expect, it } from "vitest";
import { float16ToFloat32, fromBase64, toBytes, toUint16 } from "../../js/buffers.js";

describe("toBytes", () => {
  const backing = new Uint8Array([9, 9, 1, 2, 3, 9]).buffer;

  it("reads a DataView honouring byteOffset and byteLength", () => {
    expect(Array.from(toBytes(new DataView(backing, 2, 3)))).toEqual([1, 2, 3]);
  });

  it("reads a Uint8Array view as is, and other typed views by their bytes", () => {
    const view = new Uint8Array(backing, 2, 3);
    expect(toBytes(view)).toBe(view);
    const u16 = new Uint16Array(new Uint8Array([1, 0, 2, 0]).buffer);
    expect(Array.from(toBytes(u16))).toEqual([1, 0, 2, 0]);
  });

  it("reads a whole ArrayBuffer", () => {
    expect(toBytes(backing).length).toBe(6);
  });

  it("treats null as empty and rejects other values", () => {
    expect(toBytes(null).length).toBe(0);
    expect(() => toBytes("text")).toThrow(/cannot read binary data/);
  });
});

describe("float16ToFloat32", () => {
  it("decodes normal, subnormal, zero and infinite halves", () => {
    // 1.0 = 0x3c00, -2.0 = 0xc000, 0.5 = 0x3800, smallest subnormal = 0x0001, inf = 0x7c00
    const halves = new Uint16Array([0x3c00, 0xc000, 0x3800, 0x0001, 0x7c00, 0x0000]);
    const out = float16ToFloat32(new DataView(halves.buffer));
    expect(Array.from(out.slice(0, 3))).toEqual([1, -2, 0.5]);
    expect(out[3]).toBeCloseTo(2 ** -24, 12);
    expect(out[4]).toBe(Infinity);
    expect(out[5]).toBe(0);
  });
});

describe("fromBase64", () => {
  it("decodes embedded page data", () => {
    expect(Array.from(fromBase64("AAH/"))).toEqual([0, 1, 255]);
  });
});

describe("toUint16", () => {
  it("reads aligned and unaligned views of little-endian pairs", () => {
    const bytes = new Uint8Array([7, 1, 0, 2, 0, 3, 0]);
    expect(Array.from(toUint16(new DataView(bytes.buffer, 1, 4)))).toEqual([1, 2]);
    expect(Array.from(toUint16(new DataView(bytes.buffer, 1, 6)))).toEqual([1, 2, 3]);
    const aligned = new Uint8Array([5, 0, 6, 1]);
    expect(Array.from(toUint16(aligned))).toEqual([5, 262]);
  });
});
