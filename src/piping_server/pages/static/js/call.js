/* call.js: the "call" mode (work in progress). */
(() => {
  "use strict";
  Piping.registerMode({ name: "call", start() {}, wide: true });
})();
