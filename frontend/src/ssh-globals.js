// Injected into the SSH bundle only (build.mjs): its npm dependencies were written for Node and
// name `Buffer` and `process` as globals, which a browser does not have.
export { Buffer } from "buffer";
export const process = { env: {}, browser: true, nextTick: (fn, ...args) => queueMicrotask(() => fn(...args)) };
