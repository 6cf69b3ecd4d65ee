import react from "@vitejs/plugin-react";
import { defineConfig, loadEnv } from "vite";

// Served by the gateway at `/`: index.html for `/` and every `/app/...` client route, hashed files under
// `/assets/`. `npm run dev` proxies the API (and its WebSockets) to BF_GATEWAY, by default make dev's gateway.
const API_PREFIXES = "^/(api|admin|auth|organizations|workers|ws|docs|openapi.json|health|\\.well-known)";

export default defineConfig(({ mode }) => {
  const env = loadEnv(mode, ".", "BF_");
  const target = env.BF_GATEWAY || "http://127.0.0.1:8080";
  return {
    plugins: [react()],
    base: "/",
    build: { outDir: "dist", assetsDir: "assets", target: "es2022", sourcemap: false },
    server: { proxy: { [API_PREFIXES]: { target, ws: true } } },
    preview: { proxy: { [API_PREFIXES]: { target, ws: true } } },
  };
});
