// A fake anywidget host: exactly anywidget's documented model interface and nothing more.
// get, set, save_changes, on/off with ONE event name per call ("change:<trait>" or
// "msg:custom"), send. Anything else the frontend touches (Backbone's space-separated events,
// model.attributes, listenTo, trigger, ...) throws, so a test fails where a non-Backbone host
// (marimo, the offline page) would silently lose updates.

const EVENT = /^(change:[A-Za-z_][A-Za-z0-9_]*|msg:custom)$/;
const SURFACE = new Set(["get", "set", "save_changes", "on", "off", "send"]);

/**
 * A model for `render({model, el})` plus a test handle.
 * Returns {model, host}: `model` is the strict interface the widget gets; `host` lets the test
 * change traits as the kernel would (`host.kernelSet(name, value)` fires change events), emit
 * custom messages (`host.message(content, buffers)`), and read what the widget sent and saved.
 */
export function fakeHost(traits = {}) {
  const values = { ...traits };
  const dirty = new Set();
  const listeners = new Map();
  const host = { values, sent: [], saves: 0, saved: [] };

  const check = (event, callback) => {
    if (typeof event !== "string" || !EVENT.test(event)) {
      throw new Error(`fake host: model.on/off takes one event name ("change:trait" or "msg:custom"), got ${JSON.stringify(event)}`);
    }
    if (typeof callback !== "function") throw new Error("fake host: model.on/off needs a callback function");
  };
  const emit = (event, ...args) => { for (const fn of [...(listeners.get(event) || [])]) fn(...args); };

  const api = {
    get(name) {
      if (typeof name !== "string") throw new Error("fake host: model.get takes a trait name");
      return values[name];
    },
    set(name, value) {
      if (typeof name !== "string" || arguments.length !== 2) {
        throw new Error("fake host: model.set takes (name, value), not an object of attributes");
      }
      values[name] = value;
      dirty.add(name);
    },
    save_changes() {
      host.saves += 1;
      host.saved.push(...dirty);
      const names = [...dirty];
      dirty.clear();
      for (const name of names) emit(`change:${name}`);
    },
    on(event, callback) {
      check(event, callback);
      if (!listeners.has(event)) listeners.set(event, new Set());
      listeners.get(event).add(callback);
    },
    off(event, callback) {
      check(event, callback);
      listeners.get(event)?.delete(callback);
    },
    send(content, callbacks, buffers) {
      if (content === null || typeof content !== "object") throw new Error("fake host: model.send takes a JSON object");
      host.sent.push(content);
      host.onSend?.(content, buffers);
    },
  };

  const model = new Proxy(api, {
    get(target, prop) {
      if (typeof prop === "symbol") return undefined;
      if (!SURFACE.has(prop)) throw new Error(`fake host: model.${String(prop)} is not part of anywidget's model interface`);
      return target[prop];
    },
    set(_target, prop) { throw new Error(`fake host: cannot assign model.${String(prop)}`); },
    has(_target, prop) { return SURFACE.has(prop); },
  });

  /** The kernel changes traits (each fires its change event, as hold_sync's batch does). */
  host.kernelSet = (changes) => {
    Object.assign(values, changes);
    for (const name of Object.keys(changes)) emit(`change:${name}`);
  };
  host.message = (content, buffers = []) => emit("msg:custom", content, buffers);
  host.listenerCount = () => [...listeners.values()].reduce((n, s) => n + s.size, 0);
  return { model, host };
}
