// Bundle the third-party browser libraries of the "/" page into src/piping_server/pages/static/vendor/.
//
// Each bundle is one self-contained ES module (the page imports it from a blob: URL built from text
// inlined into "/", so it must import nothing else). The output is not committed: installing the
// Python package runs this (setup.py), and scripts/test and scripts/serve install the package.
import { build } from "esbuild";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const outDir = join(here, "..", "src", "piping_server", "pages", "static", "vendor");

// name -> entry file; the name is what the page asks for (Piping.loadVendor("novnc")).
// "ssh" is the terminal (xterm.js) and the SSH client of the #ssh mode (see src/ssh.js).
const BUNDLES = { novnc: "src/novnc.js", openpgp: "src/openpgp.js", ssh: "src/ssh.js" };
// Per-bundle additions to the build options.
// The SSH library's channel stream extends Node's stream.Duplex at load time: that one is real.
const EXTRA = {
  ssh: {
    inject: [join(here, "src/ssh-globals.js")],
    define: { global: "globalThis" },
    alias: { stream: "stream-browserify" },
  },
};

// noVNC's npm lib/ is CommonJS, yet util/browser.js ends its H.264 probe with a top-level await,
// which no bundler can mix with require(). Make that probe resolve later instead: until it does,
// noVNC does not offer H.264 (the page never needs it; VNC servers fall back to other encodings).
const H264_PROBE = "exports.supportsWebCodecsH264Decode = supportsWebCodecsH264Decode = await _checkWebCodecsH264DecodeSupport();";
const noVncTopLevelAwait = {
  name: "novnc-top-level-await",
  setup(b) {
    b.onLoad({ filter: /@novnc[\\/]novnc[\\/]lib[\\/]util[\\/]browser\.js$/ }, async (args) => {
      const source = await readFile(args.path, "utf8");
      if (!source.includes(H264_PROBE)) {
        throw new Error("noVNC's util/browser.js changed: review the top-level-await patch in build.mjs");
      }
      const patched = source.replace(
        H264_PROBE,
        "exports.supportsWebCodecsH264Decode = supportsWebCodecsH264Decode = false;\n" +
          "_checkWebCodecsH264DecodeSupport().then((ok) => { " +
          "exports.supportsWebCodecsH264Decode = supportsWebCodecsH264Decode = ok; });",
      );
      return { contents: patched, loader: "js" };
    });
  },
};

// The SSH library and its key package pick WebCrypto in a browser and Node's modules in Node, with
// require() calls a bundler still sees. In the page those Node paths never run: give each an empty
// module, so that a use (a bug) fails loudly instead of the build.
const NODE_ONLY = /^(crypto|fs|net|os|path|node-rsa)$/;
const nodeOnlyStubs = {
  name: "node-only-stubs",
  setup(b) {
    b.onResolve({ filter: NODE_ONLY }, (args) => ({ path: args.path, namespace: "node-only" }));
    b.onLoad({ filter: /.*/, namespace: "node-only" }, () => ({ contents: "module.exports = {};", loader: "js" }));
  },
};

await mkdir(outDir, { recursive: true });
const versions = {};
for (const [name, entry] of Object.entries(BUNDLES)) {
  const result = await build({
    entryPoints: [join(here, entry)],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: ["chrome111", "firefox111", "safari16.4"],
    minify: true,
    legalComments: "eof",
    write: false,
    plugins: [noVncTopLevelAwait, nodeOnlyStubs],
    // xterm.js's stylesheet comes along as text: the page puts it in a <style> of its own.
    loader: { ".css": "text" },
    logLevel: "warning",
    ...(EXTRA[name] || {}),
  });
  const code = result.outputFiles[0].text;
  // The bundle is inlined in a <script> element of "/": nothing in it may end that element or
  // open an HTML comment, which would change how the rest is parsed. esbuild already escapes
  // "</script" in strings; anything left is a problem to look at, not to patch blindly.
  const unsafe = code.match(/<\/script|<!--/i);
  if (unsafe) throw new Error(`vendor/${name}.js contains "${unsafe[0]}" and cannot be inlined`);
  await writeFile(join(outDir, `${name}.js`), code);
  console.log(`vendor/${name}.js: ${(code.length / 1024).toFixed(0)} KiB`);
}
for (const pkg of ["@novnc/novnc", "openpgp", "@microsoft/dev-tunnels-ssh", "@xterm/xterm"]) {
  const json = JSON.parse(await readFile(join(here, "node_modules", pkg, "package.json"), "utf8"));
  versions[pkg] = json.version;
}
await writeFile(join(outDir, "versions.json"), JSON.stringify(versions, null, 2) + "\n");
