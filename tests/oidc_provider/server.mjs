// A certified OpenID provider (the npm package oidc-provider) on loopback, for the bastion's
// interop tests. NOT FOR PRODUCTION: development interactions accept any password, keys and
// cookie secrets are made up at every start and all state lives in memory.
//
// Usage: node server.mjs [--port N] [--exit-on-stdin-eof]
//   --port N (or OIDC_PORT): port on 127.0.0.1; 0 (the default) lets the kernel choose, race-free.
//   --exit-on-stdin-eof: exit when standard input closes (the harness keeps a pipe open, so an
//     orphaned provider goes away with the test process that started it).
// Environment:
//   OIDC_AUDIENCE          resource indicator and audience of JWT access tokens (https://bastion.test)
//   OIDC_WORKLOAD_SECRET   client secret of the confidential client ci-agent
//   OIDC_DEVICE_INTERVAL   polling interval, in seconds, put into device authorization responses (1)
//   OIDC_DEVICE_SLOW_DOWN  1: answer slow_down to a device-code poll sooner than the interval after
//                          the previous one (oidc-provider itself never sends slow_down)
//   OIDC_DEVICE_CODE_TTL   lifetime of device codes in seconds (600); short ones test expired_token
//   OIDC_ACCOUNTS_JSON     accounts as JSON {"id": {claims...}}, replacing the built-in ones
//   OIDC_REDIRECT_URIS     extra redirect URIs for bastion-cli, separated by commas
// Prints exactly one line on standard output, `READY http://127.0.0.1:PORT`, once it listens;
// everything else goes to standard error.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import * as querystring from 'node:querystring';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

// oidc-provider prints its notices with console.info; keep standard output for the READY line.
console.info = console.error;
console.log = console.error;

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    'exit-on-stdin-eof': { type: 'boolean', default: false },
  },
});

const port = Number(args.port ?? process.env.OIDC_PORT ?? 0);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`invalid port: ${args.port ?? process.env.OIDC_PORT}`);
  process.exit(2);
}

const AUDIENCE = process.env.OIDC_AUDIENCE || 'https://bastion.test';
const RESOURCE_SCOPE = 'ssh';
const DEVICE_CLIENT_ID = 'bastion-cli';
const WORKLOAD_CLIENT_ID = 'ci-agent';
const WORKLOAD_SECRET = process.env.OIDC_WORKLOAD_SECRET || 'ci-agent-secret-for-tests-only';
const DEVICE_INTERVAL = Number(process.env.OIDC_DEVICE_INTERVAL || 1);
const DEVICE_SLOW_DOWN = process.env.OIDC_DEVICE_SLOW_DOWN === '1';
const DEVICE_CODE_TTL = Number(process.env.OIDC_DEVICE_CODE_TTL || 600);
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

// Claims of each person, by account id (the login typed into the sign-in form).
const ACCOUNTS = process.env.OIDC_ACCOUNTS_JSON ? JSON.parse(process.env.OIDC_ACCOUNTS_JSON) : {
  alice: {
    preferred_username: 'alice',
    name: 'Alice Example',
    email: 'alice@example.test',
    email_verified: true,
    groups: ['dev', 'approvers'],
  },
  bob: {
    preferred_username: 'bob',
    name: 'Bob Example',
    email: 'bob@example.test',
    email_verified: true,
    groups: ['dev'],
  },
  // A username claim that is not a valid login name, for the bastion's refusal path.
  mallory: {
    preferred_username: 'Mallory; rm -rf /',
    name: 'Mallory Example',
    email: 'mallory@example.test',
    email_verified: false,
    groups: ['dev'],
  },
};

// What workloads (client credentials) are: a name the bastion can map and their groups.
const WORKLOADS = {
  [WORKLOAD_CLIENT_ID]: { preferred_username: WORKLOAD_CLIENT_ID, groups: ['ci'] },
};

const loopbackRedirects = [
  'http://127.0.0.1/callback',
  'http://127.0.0.1/',
  'http://localhost/callback',
  'http://[::1]/callback',
];
const extraRedirects = (process.env.OIDC_REDIRECT_URIS || '').split(',').map((s) => s.trim()).filter(Boolean);

function signingJwks() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { keys: [{ ...jwk, kid: `rs256-${randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' }] };
}

function accountClaims(id) {
  const claims = ACCOUNTS[id];
  if (!claims) return undefined;
  return { sub: id, ...claims };
}

const configuration = {
  clients: [
    {
      client_id: DEVICE_CLIENT_ID,
      client_name: 'bastion login',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: [
        DEVICE_GRANT,
        'authorization_code',
        'refresh_token',
      ],
      response_types: ['code'],
      redirect_uris: [...loopbackRedirects, ...extraRedirects],
    },
    {
      client_id: WORKLOAD_CLIENT_ID,
      client_name: 'CI agent',
      client_secret: WORKLOAD_SECRET,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    },
  ],
  jwks: signingJwks(),
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  async findAccount(ctx, id) {
    const claims = accountClaims(id);
    if (!claims) return undefined;
    return {
      accountId: id,
      async claims() {
        return claims;
      },
    };
  },
  // Claims by scope. `openid` gives only sub; a client asks for the others by scope.
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // By default oidc-provider leaves scope claims out of the ID token whenever the access token
  // can be used at userinfo; the bastion reads them from the ID token, so put them there.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Client credentials always get the bastion's audience (and so a JWT access token);
      // a person's client gets it when it asks with `resource`.
      async defaultResource(ctx, client, oneOf) {
        if (oneOf) return oneOf;
        if (client?.clientId === WORKLOAD_CLIENT_ID) return AUDIENCE;
        return undefined;
      },
      async useGrantedResource() {
        return true;
      },
      async getResourceServerInfo(ctx, resourceIndicator) {
        if (resourceIndicator !== AUDIENCE) {
          throw new Provider.errors.InvalidTarget();
        }
        return {
          scope: RESOURCE_SCOPE,
          audience: AUDIENCE,
          accessTokenTTL: 10 * 60,
          accessTokenFormat: 'jwt', // RFC 9068: header typ "at+jwt"
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  // Claims the bastion maps, in JWT access tokens: for a workload sub is its client id.
  async extraTokenClaims(ctx, token) {
    if (token.kind === 'ClientCredentials') {
      return WORKLOADS[token.clientId];
    }
    if (token.accountId) {
      const claims = accountClaims(token.accountId);
      if (claims) return { preferred_username: claims.preferred_username, groups: claims.groups };
    }
    return undefined;
  },
  ttl: {
    AccessToken: 10 * 60,
    AuthorizationCode: 60,
    ClientCredentials: 10 * 60,
    DeviceCode: DEVICE_CODE_TTL,
    Grant: 60 * 60,
    IdToken: 60 * 60,
    Interaction: 10 * 60,
    RefreshToken: 24 * 60 * 60,
    Session: 60 * 60,
  },
};

for (const [name, value] of [['OIDC_DEVICE_INTERVAL', DEVICE_INTERVAL], ['OIDC_DEVICE_CODE_TTL', DEVICE_CODE_TTL]]) {
  if (!Number.isInteger(value) || value < 0) {
    console.error(`invalid ${name}: ${process.env[name]}`);
    process.exit(2);
  }
}

// RFC 8628 section 3.5: slow_down when a client polls faster than the interval. The body read
// here is handed on as req.body, which oidc-provider uses when the stream was already read.
const lastPoll = new Map();
async function slowDown(ctx, next) {
  if (ctx.method !== 'POST' || ctx.path !== '/token' || !ctx.is('application/x-www-form-urlencoded')) {
    return next();
  }
  const chunks = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += chunk.length;
    if (size > 56 * 1024) ctx.throw(413);
    chunks.push(chunk);
  }
  const body = querystring.parse(Buffer.concat(chunks).toString());
  ctx.req.body = body;
  if (body.grant_type === DEVICE_GRANT && typeof body.device_code === 'string') {
    const now = Date.now();
    const last = lastPoll.get(body.device_code);
    lastPoll.set(body.device_code, now);
    if (last !== undefined && now - last < DEVICE_INTERVAL * 1000) {
      ctx.status = 400;
      ctx.set('Cache-Control', 'no-store');
      ctx.body = { error: 'slow_down', error_description: `poll at most every ${DEVICE_INTERVAL} s` };
      console.error('grant.error: slow_down: polled faster than the interval');
      return undefined;
    }
  }
  return next();
}

// Listen first, so that port 0 resolves to the issuer's real port before the provider exists.
const server = createServer();
server.on('error', (err) => {
  console.error(`listen failed: ${err.message}`);
  process.exit(1);
});
server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, configuration);

  // oidc-provider 9 sends no `interval`, which means 5 s to clients (RFC 8628 section 3.2).
  provider.on('device_authorization.success', (ctx, body) => {
    body.interval = DEVICE_INTERVAL;
  });
  for (const event of [
    'server_error', 'authorization.error', 'grant.error', 'device_authorization.error',
    'introspection.error', 'revocation.error', 'userinfo.error', 'discovery.error',
    'end_session.error', 'jwks.error', 'code_verification.error',
  ]) {
    provider.on(event, (ctx, err) => {
      console.error(`${event}: ${err?.error || err?.name}: ${err?.error_description || err?.message}`);
    });
  }
  for (const event of ['grant.success', 'device_authorization.success', 'authorization.success']) {
    provider.on(event, (ctx) => {
      console.error(`${event}: client=${ctx.oidc?.client?.clientId} path=${ctx.path}`);
    });
  }

  if (DEVICE_SLOW_DOWN) provider.use(slowDown);
  server.on('request', provider.callback());
  process.stdout.write(`READY ${issuer}\n`);
});

function stop() {
  server.close();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
if (args['exit-on-stdin-eof']) {
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
}
