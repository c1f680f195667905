# tickstream's processes (producer, consumers, bridge, indicator worker): `node bin/tickstream.js <command>`.
# TypeScript runs through tsx, as in development, so there is no build step to keep in sync.

FROM node:22-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM node:22-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY bin ./bin
COPY shared ./shared
COPY producers ./producers
COPY consumers ./consumers
COPY cli ./cli
# Migrations, QuestDB DDL and sample files are read at run time.
COPY infra ./infra
USER node
CMD ["node", "bin/tickstream.js", "--help"]
