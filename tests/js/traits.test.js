import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { TRAITS, VIEW_TRAITS } from "../../js/traits.js";

// famwidget/widget/traits.json is generated from the Python classes (python -m famwidget.widget.traits)
// and checked against them by tests/test_explorer.py.
const python = JSON.parse(readFileSync(new URL("../../famwidget/widget/traits.json", import.meta.url), "utf-8"));

describe("the trait contract", () => {
  it("js/traits.js names exactly the Python widgets' synced traits, with the same kinds", () => {
    expect(Object.keys(TRAITS).sort()).toEqual(Object.keys(python).sort());
    for (const [name, kind] of Object.entries(python)) expect([name, TRAITS[name]]).toEqual([name, kind]);
  });

  it("every trait the view reloads on is a declared trait", () => {
    for (const name of VIEW_TRAITS) expect(TRAITS).toHaveProperty(name);
  });
});
