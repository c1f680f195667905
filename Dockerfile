# tickstream's processes (producer, consumers, bridge, indicator worker, serve): `node bin/tickstream.js <command>`,
# which runs the compiled JavaScript in dist/ (nothing is transpiled at start; tsx is not in the image).

# Build: the dev dependencies (TypeScript, esbuild) compile the sources into dist/ and bundle the dashboard
# into server/web/public/dist/.
FROM node:22-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY shared ./shared
COPY producers ./producers
COPY consumers ./consumers
COPY server ./server
COPY cli ./cli
RUN npm run build

# Run-time dependencies only; no install scripts run (nothing here needs one).
FROM node:22-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

FROM node:22-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY --from=build /app/dist ./dist
# The dashboard's static files (index.html, style.css and the bundle), served by `tickstream serve`.
COPY --from=build /app/server/web/public ./server/web/public
# Migrations, QuestDB DDL and sample files are read at run time.
COPY infra ./infra
USER node
CMD ["node", "bin/tickstream.js", "--help"]
