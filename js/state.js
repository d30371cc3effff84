// The frontend's state: the model's traits (read through anywidget's documented interface only)
// and what lives in the browser alone (decoded buffers, hover, pin, pointer).

/** Read a trait with a fallback for hosts that leave unset traits undefined. */
export function reader(model) {
  return (name, fallback) => model.get(name) ?? fallback;
}

/** Set and save one trait (anywidget: set + save_changes). */
export function writer(model) {
  return (name, value) => { model.set(name, value); model.save_changes(); };
}

/**
 * Listen to trait changes and custom messages, ONE event name per model.on call (anywidget's
 * interface; space-separated names are Backbone's and break in marimo).
 * handlers: [[["trait", ...] or "msg:custom", fn], ...]. Returns the function that unbinds all.
 */
export function bind(model, handlers) {
  const bound = [];
  for (const [names, fn] of handlers) {
    const events = names === "msg:custom" ? [names] : names.map((n) => `change:${n}`);
    for (const event of events) { model.on(event, fn); bound.push([event, fn]); }
  }
  return () => { for (const [event, fn] of bound) model.off(event, fn); };
}

/** The browser-side state of one view. */
export function localState() {
  return { rgb: null, heat: null, H: 0, W: 0, channels: null, hover: null, pinned: null,
           point: null, pair: null, points: null, started: 0 };
}
