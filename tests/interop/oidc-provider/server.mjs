// oidc-provider on 127.0.0.1 with the client credentials grant, for chaveiro's interop tests.
// Clients come as JSON in CHAVEIRO_CLIENTS. With CHAVEIRO_STRICT=1 a client assertion must
// carry RFC 10070's typ and the issuer as its one audience. Prints "listening <port>".
import http from "node:http";
import Provider, { errors } from "oidc-provider";

const clients = JSON.parse(process.env.CHAVEIRO_CLIENTS || "[]");
const strict = process.env.CHAVEIRO_STRICT === "1";
const server = http.createServer();
server.listen(0, "127.0.0.1", () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients,
    features: { clientCredentials: { enabled: true }, devInteractions: { enabled: false } },
    clientAuthMethods: ["client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt"],
    async assertJwtClientAuthClaimsAndHeader(ctx, claims, header) {
      if (strict && (header.typ !== "client-authentication+jwt" || claims.aud !== ctx.oidc.issuer)) {
        throw new errors.InvalidClientAuth("RFC 10070: typ client-authentication+jwt and aud the issuer");
      }
    },
  });
  server.on("request", provider.callback());
  process.stdout.write(`listening ${port}\n`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
