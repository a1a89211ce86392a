/* main.js: boot, last of the scripts, once every mode has registered itself. */
(() => {
  "use strict";
  // The script sits at the end of <body>: every element it needs is parsed already.
  Piping.start();
})();
