// Builds famwidget/widget/static/widget.js: the ES module bundle of js/index.js, minified, with
// js/widget.css embedded as minified text (esbuild's text loader would embed it as written).
import { readFile } from "node:fs/promises";
import * as esbuild from "esbuild";

const minifiedCss = {
  name: "minified-css-text",
  setup(build) {
    build.onLoad({ filter: /\.css$/ }, async (args) => {
      const { code } = await esbuild.transform(await readFile(args.path, "utf8"), {
        loader: "css",
        minify: true,
      });
      return { contents: code, loader: "text" };
    });
  },
};

await esbuild.build({
  entryPoints: ["js/index.js"],
  bundle: true,
  format: "esm",
  minify: true,
  define: { "define.amd": "false" },
  plugins: [minifiedCss],
  outfile: "famwidget/widget/static/widget.js",
});
