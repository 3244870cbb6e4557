/**
 * The identity of a query: its name and its arguments as canonical JSON (object keys sorted),
 * so `{a: 1, b: 2}` and `{b: 2, a: 1}` name the same query and share one subscription.
 */

function sortedKeys(_key, value) {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    const sorted = {};
    for (const key of Object.keys(value).sort()) sorted[key] = value[key];
    return sorted;
  }
  return value;
}

/** JSON text of `value` with every object's keys in sorted order. */
export function canonicalJSON(value) {
  return JSON.stringify(value === undefined ? null : value, sortedKeys);
}

/** The key under which a query's subscription, value and listeners are kept. */
export function queryToken(name, args) {
  return canonicalJSON([name, args ?? {}]);
}
