// Entry of the noVNC bundle: the RFB client only (no noVNC UI); the page gives it its own transport.
// noVNC's npm lib/ is CommonJS compiled by Babel: its class is `exports.default`, which a bundler
// may hand over as the default import itself or wrapped once more, depending on its interop rules.
import rfbModule from "@novnc/novnc/lib/rfb.js";

export const RFB = typeof rfbModule === "function" ? rfbModule : rfbModule.default;
