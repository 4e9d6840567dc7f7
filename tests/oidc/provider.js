// A real OpenID provider (npm `oidc-provider`) for Gatehouse's identity tests. Never for production.
//
// Started by tests/gateway/identity/test_oidc.py: listens on a free 127.0.0.1 port, prints one JSON
// line {"issuer": ...} on stdout when ready, and exits when its stdin closes (so a crashed test run
// leaves no process behind). Clients register dynamically at /reg (with their redirect_uris and
// post_logout_redirect_uris); devInteractions serve the login and consent pages (log in as any
// account id, no password; "[ Cancel ]" answers error=access_denied). RP-initiated logout is on,
// as oidc-provider 9.13.3 has it: end_session_endpoint shows "Yes, sign me out", then ends the
// provider's session and redirects to the registered post_logout_redirect_uri.
import http from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';

import Provider from 'oidc-provider';

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', use: 'sig', alg: 'RS256' };

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    features: {
      devInteractions: { enabled: true },
      registration: { enabled: true },
      rpInitiatedLogout: { enabled: true },
    },
    pkce: { required: () => true },
    conformIdTokenClaims: false,
    claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
    async findAccount(ctx, id) {
      return {
        accountId: id,
        async claims() {
          return { sub: id, email: `${id}@example.test`, email_verified: true, groups: ['staff', 'a,admins'] };
        },
      };
    },
  });
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
