// The bundle as a browser runs it, for the tests in js/test/: the committed
// twisted_mesh/web/static/twisted_mesh.js is run as a script, which defines
// the global `twisted_mesh`.  So the tests check what is shipped, and CI
// checks that it is what js/src builds.

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import vm from "node:vm";

const BUNDLE = fileURLToPath(new URL("../../twisted_mesh/web/static/twisted_mesh.js", import.meta.url));

vm.runInThisContext(readFileSync(BUNDLE, "utf8"), { filename: BUNDLE });

/** The global `twisted_mesh` the bundle defines. */
export const tm = globalThis.twisted_mesh;

/** The bundle's frame codec, and the protocol's flags. */
export const { codec, flags } = tm;

/** Bytes as hex, and back. */
export const hex = (bytes) => codec.toHex(bytes);
export const unhex = (text) => codec.fromHex(text);
