// @vitest-environment jsdom
import { afterEach, describe, expect, it } from "vitest";
import { detectHost, detectTheme, followHost, luminance, parseColor } from "../../js/host.js";

afterEach(() => {
  document.body.replaceChildren();
  delete document.body.dataset.jpThemeLight;
  delete document.body.dataset.notebook;
  delete window.__MARIMO_MOUNT_CONFIG__;
});

describe("host and theme", () => {
  it("tells the host from the page", () => {
    const el = document.createElement("div");
    document.body.append(el);
    expect(detectHost(el)).toBe("unknown");
    expect(detectHost(el, "standalone")).toBe("standalone");
    const shell = document.createElement("div");
    shell.className = "jp-LabShell";
    document.body.append(shell);
    expect(detectHost(el)).toBe("jupyterlab");
    document.body.dataset.notebook = "notebooks";
    expect(detectHost(el)).toBe("notebook");
    window.__MARIMO_MOUNT_CONFIG__ = {};
    expect(detectHost(el)).toBe("marimo");
  });

  it("reads dark or light from JupyterLab's flag, else from the background's luminance", () => {
    const page = document.createElement("div");
    const el = document.createElement("div");
    page.append(el);
    document.body.append(page);
    expect(detectTheme(el)).toBe("light"); // nothing opaque: a bare page
    page.style.backgroundColor = "rgb(30, 30, 30)";
    expect(detectTheme(el)).toBe("dark");
    page.style.backgroundColor = "rgb(250, 250, 250)";
    expect(detectTheme(el)).toBe("light");
    document.body.dataset.jpThemeLight = "false";
    expect(detectTheme(el)).toBe("dark");
    expect(parseColor("rgba(1, 2, 3, 0.5)")).toEqual([1, 2, 3, 0.5]);
    expect(luminance([255, 255, 255])).toBeCloseTo(1);
  });

  it("follows a theme switch", async () => {
    const el = document.createElement("div");
    const root = document.createElement("div");
    document.body.append(el);
    const stop = followHost(root, el);
    expect(root.dataset.theme).toBe("light");
    document.body.dataset.jpThemeLight = "false";
    await new Promise((r) => setTimeout(r, 0));
    expect(root.dataset.theme).toBe("dark");
    stop();
  });
});
