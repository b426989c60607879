import { defineConfig } from "vite";

// The page is served by veild from the same origin; in `npm run dev` the API is proxied to a
// local `veild run --dev`.
export default defineConfig({
  build: { outDir: "dist", emptyOutDir: true, target: "es2020", assetsInlineLimit: 0 },
  server: {
    proxy: {
      "/api": "http://127.0.0.1:8080",
      "/healthz": "http://127.0.0.1:8080",
      "/metrics": "http://127.0.0.1:8080",
    },
  },
  test: { environment: "node" },
});
