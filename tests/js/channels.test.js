import { describe, expect, it } from "vitest";
import { channelHeat, contributionsAt, decodeChannels, overallContributions, sampleAt } from "../../js/channels.js";

// Two 2x2 channels: channel ids 5 and 9; channel 5 is bright top-left, channel 9 bottom-right.
const bytes = new Uint8Array([255, 0, 0, 0, 0, 0, 0, 255]);
const info = { k: 2, h: 2, w: 2, ids: [5, 9], weights: [1, 2], lo: [0, -1], scale: [1 / 255, 2 / 255] };

describe("channels", () => {
  const ch = decodeChannels(new DataView(bytes.buffer), info);

  it("dequantises with per-channel lo and scale", () => {
    expect(ch.maps[0]).toBeCloseTo(1, 6);
    expect(ch.maps[4]).toBeCloseTo(-1, 6);
    expect(ch.maps[7]).toBeCloseTo(1, 6);
  });

  it("samples bilinearly like torch's align_corners=false", () => {
    // a 4x4 image over a 2x2 grid: pixel (0,0) sits on cell (0,0); pixel (1,1) is 1/4 of the way
    expect(sampleAt(ch, 0, 0, 0, 4, 4)).toBeCloseTo(1, 6);
    expect(sampleAt(ch, 0, 1, 1, 4, 4)).toBeCloseTo(0.75 * 0.75, 6);
  });

  it("ranks channels by weight x activation at the pointer", () => {
    const topLeft = contributionsAt(ch, 0, 0, 4, 4);
    expect(topLeft.map((r) => r.channel)).toEqual([5, 9]);
    const bottomRight = contributionsAt(ch, 3, 3, 4, 4);
    expect(bottomRight[0].channel).toBe(9);
    expect(bottomRight[0].contribution).toBeCloseTo(2, 5);
  });

  it("ranks channels over the whole image", () => {
    const rows = overallContributions(ch);
    expect(rows[0].channel).toBe(5); // mean 0.25 x 1 beats mean -0.5 x 2
  });

  it("upsamples one channel to a 0..255 heat map", () => {
    const heat = channelHeat(ch, 1, 4, 4);
    expect(heat[15]).toBe(255);
    expect(heat[0]).toBe(0);
  });

  it("returns null for an empty stack", () => {
    expect(decodeChannels(new Uint8Array(0), { k: 0 })).toBeNull();
  });
});
