# tickstream's processes (producer, consumers, bridge, indicator worker, serve): `node bin/tickstream.js <command>`.
# TypeScript runs through tsx, as in development, so there is no build step to keep in sync.

FROM node:22-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# The dashboard bundle (esbuild is a dev dependency, so it is built in its own stage).
FROM node:22-bookworm-slim AS web
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY server ./server
COPY consumers/indicators/math.ts ./consumers/indicators/math.ts
RUN npx tsx server/build-web.ts

FROM node:22-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY bin ./bin
COPY shared ./shared
COPY producers ./producers
COPY consumers ./consumers
COPY server ./server
COPY --from=web /app/server/web/public/dist ./server/web/public/dist
COPY cli ./cli
# Migrations, QuestDB DDL and sample files are read at run time.
COPY infra ./infra
USER node
CMD ["node", "bin/tickstream.js", "--help"]
