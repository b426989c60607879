import { describe, expect, it } from "vitest";
import { fromSiteInput, setZone, toSiteInput, when } from "./time";

describe("time fields in the site's zone", () => {
  it("reads and writes Berlin time in winter and summer", () => {
    setZone("Europe/Berlin");
    expect(fromSiteInput("2026-12-01T08:04:00")).toBe(Date.UTC(2026, 11, 1, 7, 4));
    expect(fromSiteInput("2026-07-01T08:00:00")).toBe(Date.UTC(2026, 6, 1, 6, 0));
    expect(toSiteInput(Date.UTC(2026, 11, 1, 7, 4))).toBe("2026-12-01T08:04:00");
    expect(toSiteInput(Date.UTC(2026, 6, 1, 6, 0))).toBe("2026-07-01T08:00:00");
    // Shown and typed agree: what the page prints is what a field means.
    const t = Date.UTC(2026, 2, 29, 0, 30); // the night clocks go forward
    expect(fromSiteInput(toSiteInput(t))).toBe(t);
    expect(when(t)).toContain("1:30");
  });
  it("is UTC in UTC, and malformed input is NaN", () => {
    setZone("UTC");
    expect(fromSiteInput("2026-12-01T08:04")).toBe(Date.UTC(2026, 11, 1, 8, 4));
    expect(fromSiteInput("")).toBeNaN();
    expect(fromSiteInput("yesterday")).toBeNaN();
  });
});
