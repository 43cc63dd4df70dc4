// A real OpenID provider (panva's oidc-provider 9.x) for kedge's integration tests.
//
// Usage: node provider.mjs <config.json>
//
// The Python side (tests/support/oidc_provider.py) writes the config file and owns the signing
// keys. This script binds 127.0.0.1:<port> (port 0 picks a free one) *before* building the
// provider, so the issuer `http://127.0.0.1:<port>` is known without a port race, then prints
// exactly one line `READY <issuer>` on stdout. Everything else (oidc-provider's notices, request
// errors) goes to stderr. SIGTERM/SIGINT or EOF on stdin exit at once: no state is worth saving.
//
// Config (JSON):
//   port             listening port on 127.0.0.1 (0 = any free port)
//   jwks_file        path of a private JWKS; the first key matching an alg signs (so a rotated
//                    set lists the new key first and may keep the old one for verification)
//   clients          [{metadata: <RFC 7591 client metadata>, claims: {...}}]; `claims` are added
//                    to that client's client_credentials access tokens
//   accounts         [{username, password, sub, claims: {...}}]; `claims` go in the ID token and
//                    in access tokens issued to that account
//   resources        [{indicator, audience, alg, scope, ttl}]: RFC 8707 resource indicators whose
//                    access tokens are JWTs (RFC 9068) with `aud` = audience
//   default_resource the indicator used when a token request names none (may be null)
//   id_token_ttl     seconds
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

// oidc-provider prints its development notices with console.info (stdout); stdout is reserved
// for the READY line, which the harness reads, so every other line goes to stderr.
console.info = console.error;
console.log = console.error;

const configPath = process.argv[2];
if (!configPath) {
  console.error('usage: node provider.mjs <config.json>');
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, 'utf8'));
const jwks = JSON.parse(readFileSync(config.jwks_file, 'utf8'));

const accountsBySub = new Map(config.accounts.map((a) => [a.sub, a]));
const accountsByName = new Map(config.accounts.map((a) => [a.username, a]));
const clientClaims = new Map(config.clients.map((c) => [c.metadata.client_id, c.claims ?? {}]));
const resources = new Map(config.resources.map((r) => [r.indicator, r]));

// Every custom claim any account carries is released under the `openid` scope, so the scripted
// login only needs `scope=openid` to get them in the ID token.
const accountClaimNames = new Set(config.accounts.flatMap((a) => Object.keys(a.claims ?? {})));

function readForm(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > 64 * 1024) {
        reject(new Error('form too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}

// Our own interaction routes instead of devInteractions (which accept any login without a
// password). They speak JSON so the Python side can script them without parsing HTML:
//   GET  /interaction/:uid          -> {uid, prompt, details}
//   POST /interaction/:uid/login    form username, password -> 303 back to the provider (401 on
//                                   bad credentials)
//   POST /interaction/:uid/consent  grants everything the prompt asks for -> 303 back
function interactionRoutes(provider) {
  const pattern = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|consent))?$/;
  return async (ctx, next) => {
    const match = pattern.exec(ctx.path);
    if (!match) {
      await next();
      return;
    }
    const [, uid, action] = match;
    ctx.set('cache-control', 'no-store');
    let details;
    try {
      details = await provider.interactionDetails(ctx.req, ctx.res);
    } catch (err) {
      ctx.status = 400;
      ctx.body = { error: 'invalid_interaction', error_description: String(err.message) };
      return;
    }
    if (details.uid !== uid) {
      ctx.status = 400;
      ctx.body = { error: 'invalid_interaction', error_description: 'uid mismatch' };
      return;
    }
    const prompt = details.prompt.name;
    if (!action && ctx.method === 'GET') {
      ctx.body = { uid, prompt, details: details.prompt.details, params: details.params };
      return;
    }
    if (ctx.method !== 'POST' || action !== prompt) {
      ctx.status = 409;
      ctx.body = { error: 'wrong_prompt', error_description: `prompt is ${prompt}` };
      return;
    }
    let result;
    if (prompt === 'login') {
      const form = await readForm(ctx.req);
      const account = accountsByName.get(form.get('username') ?? '');
      if (!account || account.password !== form.get('password')) {
        ctx.status = 401;
        ctx.body = { error: 'invalid_credentials' };
        return;
      }
      result = { login: { accountId: account.sub } };
    } else {
      const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = details.prompt.details;
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
      if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
      if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      result = { consent: { grantId: await grant.save() } };
    }
    const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, {
      mergeWithLastSubmission: true,
    });
    ctx.redirect(returnTo);
    ctx.status = 303;
  };
}

const server = createServer();
server.listen(config.port, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const ttl = (token) => token.resourceServer?.accessTokenTTL ?? 600;

  const provider = new Provider(issuer, {
    jwks,
    clients: config.clients.map((c) => c.metadata),
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    claims: { openid: ['sub', ...accountClaimNames] },
    // Code-flow ID tokens carry the account's claims too (not only /userinfo), so a test can
    // present an ID token to the edge and have its permissions honoured.
    conformIdTokenClaims: false,
    async findAccount(_ctx, sub) {
      const account = accountsBySub.get(sub);
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { ...account.claims, sub };
        },
      };
    },
    async extraTokenClaims(_ctx, token) {
      if (token.accountId) return accountsBySub.get(token.accountId)?.claims;
      return clientClaims.get(token.clientId);
    },
    interactions: {
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      // RFC 8707 resource indicators are oidc-provider 9's way to JWT access tokens (RFC 9068):
      // a resource server declares accessTokenFormat 'jwt' and its audience.
      resourceIndicators: {
        enabled: true,
        async defaultResource(_ctx, _client, oneOf) {
          return oneOf ?? config.default_resource ?? undefined;
        },
        // The code exchange reuses the resource granted at /auth without naming it again.
        async useGrantedResource() {
          return true;
        },
        async getResourceServerInfo(_ctx, indicator) {
          const r = resources.get(indicator);
          if (!r) throw new errors.InvalidTarget();
          return {
            audience: r.audience,
            scope: r.scope,
            accessTokenTTL: r.ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: r.alg } },
          };
        },
      },
    },
    ttl: {
      AccessToken: (_ctx, token) => ttl(token),
      ClientCredentials: (_ctx, token) => ttl(token),
      IdToken: () => config.id_token_ttl,
      Interaction: () => 600,
      Session: () => 3600,
      Grant: () => 3600,
    },
  });
  // GET /kedge-test/grants: successful token requests by grant_type, so a test can count
  // refreshes (e.g. at most one in flight under concurrent callers).
  const grants = {};
  provider.on('grant.success', (ctx) => {
    const type = ctx.oidc.params?.grant_type ?? 'unknown';
    grants[type] = (grants[type] ?? 0) + 1;
  });
  provider.use(async (ctx, next) => {
    if (ctx.path === '/kedge-test/grants' && ctx.method === 'GET') {
      ctx.body = grants;
      return;
    }
    await next();
  });
  provider.use(interactionRoutes(provider));
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));

  server.on('request', provider.callback());
  process.stdout.write(`READY ${issuer}\n`);
});
server.on('error', (err) => {
  console.error(`listen failed: ${err.message}`);
  process.exit(1);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
// The harness holds our stdin open and never writes to it: EOF means it died (say pytest was
// killed by a timeout), so leave instead of lingering on the port.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
