// The OpenID provider of the SSO tests: panva's oidc-provider with the accounts, clients and
// keys that tests/sso/idp.py writes to a JSON file, on loopback.
//
//   node server.mjs CONFIG.json
//
// CONFIG names the node_modules folder that holds oidc-provider (`modules`), so that this file
// can stay in the work tree while `make install` puts the packages in the virtualenv.
//
// Besides the provider's own routes it serves:
//   GET  /interaction/:uid         the sign-in form (or, for the consent prompt, an automatic
//                                  grant of what was asked, without a page)
//   POST /interaction/:uid/login   checks the password; a wrong one shows the form again (401)
//   PUT  /test/groups/:id          a user's or a service client's groups, for the next sign-in
//                                  or token (JSON list body; Authorization: Bearer ADMIN_SECRET)

import { createRequire } from 'node:module';
import { timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const require = createRequire(join(config.modules, 'resolve.cjs'));
const { default: Provider, errors } = await import(
  pathToFileURL(require.resolve('oidc-provider')).href
);

/** Resource indicators must be absolute URIs: `urn:audience:NAME` stands for the audience NAME. */
const AUDIENCE_URN = 'urn:audience:';

const log = (...words) => console.log(new Date().toISOString(), ...words);

const users = new Map(config.users.map((user) => [user.login, user]));
const services = new Map(config.services.map((service) => [service.client_id, service]));

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body, status = 200) {
  return {
    status,
    html: `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escape(title)}</title></head>
<body>
<main id="op-page">
<h1>${escape(title)}</h1>
${body}
</main>
</body>
</html>`,
  };
}

function loginPage(uid, clientId, error) {
  const alert = error ? `<p id="login-error" role="alert">${escape(error)}</p>` : '';
  return page('Sign in', `<p>to <span id="client-id">${escape(clientId)}</span></p>
${alert}
<form id="login-form" method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
<label for="username">Username</label>
<input id="username" name="username" type="text" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" required>
<button id="sign-in" type="submit">Sign in</button>
</form>`, error ? 401 : 200);
}

function send(ctx, { status, html }) {
  ctx.status = status;
  ctx.type = 'html';
  ctx.body = html;
}

async function readBody(ctx, limit = 64 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += chunk.length;
    if (size > limit) ctx.throw(413, 'body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function accountFor(login) {
  const user = users.get(login);
  if (!user) return undefined;
  return {
    accountId: login,
    async claims() {
      return {
        sub: login,
        preferred_username: login,
        name: user.name,
        email: user.email,
        email_verified: true,
        groups: [...user.groups],
      };
    },
  };
}

const provider = new Provider(config.issuer, {
  clients: [
    {
      client_id: config.client.client_id,
      client_secret: config.client.client_secret,
      redirect_uris: config.client.redirect_uris,
      post_logout_redirect_uris: config.client.post_logout_redirect_uris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    },
    ...config.services.map((service) => ({
      client_id: service.client_id,
      client_secret: service.secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
  ],
  jwks: config.jwks,
  cookies: { keys: config.cookie_keys },
  findAccount: async (_ctx, sub) => accountFor(sub),
  // groups come with `openid` itself, so whatever scopes are asked the ID token has them
  claims: {
    openid: ['sub', 'groups'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
  },
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  // a resource server's TTL is the service client's own (see getResourceServerInfo)
  ttl: {
    Interaction: 600,
    Session: 24 * 3600,
    Grant: 24 * 3600,
    IdToken: 3600,
    AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL || config.access_token_ttl,
    ClientCredentials: (_ctx, token) => (
      token.resourceServer?.accessTokenTTL || config.access_token_ttl),
  },
  interactions: { url: async (_ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      // Signs out at once: the confirmation form is submitted by the page itself.
      logoutSource: async (ctx, form) => {
        send(ctx, page('Signing out', `${form}
<button id="logout-yes" type="submit" form="op.logoutForm" name="logout" value="yes">Sign out</button>
<script>document.getElementById('logout-yes').click();</script>`));
      },
      postLogoutSuccessSource: async (ctx) => {
        send(ctx, page('Signed out', '<p id="signed-out">You are signed out.</p>'));
      },
    },
    resourceIndicators: {
      enabled: true,
      // A token request without `resource` gets the default audience; sign-ins get none (their
      // access token stays opaque, for userinfo).
      defaultResource: async (ctx) => (
        ctx.oidc.params?.grant_type === 'client_credentials'
          ? `${AUDIENCE_URN}${config.default_audience}` : undefined),
      getResourceServerInfo: async (_ctx, resource, client) => ({
        scope: '',
        audience: resource.startsWith(AUDIENCE_URN) ? resource.slice(AUDIENCE_URN.length) : resource,
        accessTokenTTL: services.get(client.clientId)?.ttl ?? config.access_token_ttl,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
      useGrantedResource: async () => true,
    },
  },
  extraTokenClaims: async (_ctx, token) => {
    if (token.kind === 'ClientCredentials') {
      const service = services.get(token.clientId);
      if (service) {
        return {
          preferred_username: service.preferred_username || service.client_id,
          groups: [...service.groups],
        };
      }
    } else if (token.accountId && users.has(token.accountId)) {
      return { preferred_username: token.accountId, groups: [...users.get(token.accountId).groups] };
    }
    return undefined;
  },
  renderError: async (ctx, out) => {
    const lines = Object.entries(out)
      .map(([key, value]) => `<p><strong>${escape(key)}</strong>: <span class="${escape(key)}">${escape(value)}</span></p>`)
      .join('\n');
    send(ctx, page('Provider error', `<div id="op-error">${lines}</div>`, ctx.status || 400));
  },
});

// --- the interactions: sign-in with a password check, consent granted without a page ---

async function autoConsent(ctx, interaction) {
  const { prompt: { details }, params, session } = interaction;
  const grant = interaction.grantId
    ? await provider.Grant.find(interaction.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(details.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  return provider.interactionResult(
    ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true },
  );
}

function adminAllowed(ctx) {
  const given = Buffer.from(ctx.get('authorization'));
  const expected = Buffer.from(`Bearer ${config.admin_secret}`);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

async function setGroups(ctx, id) {
  if (!adminAllowed(ctx)) {
    ctx.status = 401;
    ctx.body = { error: 'admin secret required' };
    return;
  }
  let groups;
  try {
    groups = JSON.parse(await readBody(ctx));
  } catch {
    groups = undefined;
  }
  if (!Array.isArray(groups) || !groups.every((group) => typeof group === 'string')) {
    ctx.status = 400;
    ctx.body = { error: 'body must be a JSON list of group names' };
    return;
  }
  const targets = [users.get(id), services.get(id)].filter(Boolean);
  if (!targets.length) {
    ctx.status = 404;
    ctx.body = { error: `no user or service client ${id}` };
    return;
  }
  for (const target of targets) target.groups = groups;
  log('groups of', id, 'now', JSON.stringify(groups));
  ctx.status = 204;
}

provider.use(async (ctx, next) => {
  const began = Date.now();
  try {
    const groupsRoute = ctx.path.match(/^\/test\/groups\/([^/]+)$/);
    const interactionRoute = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
    if (groupsRoute && ctx.method === 'PUT') {
      await setGroups(ctx, decodeURIComponent(groupsRoute[1]));
    } else if (interactionRoute && ctx.method === 'GET' && !interactionRoute[2]) {
      const interaction = await provider.interactionDetails(ctx.req, ctx.res);
      if (interaction.prompt.name === 'login') {
        send(ctx, loginPage(interaction.uid, interaction.params.client_id));
      } else {
        ctx.status = 303;
        ctx.redirect(await autoConsent(ctx, interaction));
      }
    } else if (interactionRoute && ctx.method === 'POST' && interactionRoute[2]) {
      const interaction = await provider.interactionDetails(ctx.req, ctx.res);
      const form = new URLSearchParams(await readBody(ctx));
      const login = form.get('username') ?? '';
      const user = users.get(login);
      if (!user || user.password !== (form.get('password') ?? '')) {
        log('sign-in refused for', JSON.stringify(login));
        send(ctx, loginPage(interaction.uid, interaction.params.client_id, 'Invalid username or password.'));
      } else {
        log('signed in', login);
        const to = await provider.interactionResult(
          ctx.req, ctx.res, { login: { accountId: login } }, { mergeWithLastSubmission: false },
        );
        ctx.status = 303;
        ctx.redirect(to);
      }
    } else {
      await next();
    }
  } catch (error) {
    if (error instanceof errors.SessionNotFound) {
      send(ctx, page('Provider error', `<div id="op-error"><p>${escape(error.message)}</p></div>`, 400));
    } else {
      throw error;
    }
  } finally {
    log(ctx.method, ctx.path, ctx.status, `${Date.now() - began}ms`);
  }
});

for (const event of ['server_error', 'grant.error', 'authorization.error', 'end_session.error', 'introspection.error']) {
  provider.on(event, (_ctx, error) => log(event, error.name, error.message, error.error_description ?? ''));
}

const server = provider.listen(config.port, '127.0.0.1', () => {
  log('listening', config.issuer);
});
function stop(why) {
  log('stopping:', why);
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => stop(signal));
// The handle's process may die without stopping us (SIGKILL, a crash): then we go too.
if (config.parent_pid) {
  setInterval(() => {
    try {
      process.kill(config.parent_pid, 0);
    } catch {
      stop(`parent ${config.parent_pid} is gone`);
    }
  }, 1000).unref();
}
