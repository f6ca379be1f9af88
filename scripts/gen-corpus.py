#!/usr/bin/env python3
"""Generates cordon-detect's labeled corpus: fake but format-valid secrets
and personal data of every detector, planted in realistic code, config, logs
and JSON, plus hard negatives (UUIDs, git SHAs, hashes, base64 images,
minified JS, lockfiles, test fixtures with placeholder values).

    scripts/gen-corpus.py --out DIR [--negative-mb 12] [--seed 1]

Writes DIR/positive/*, DIR/negative/* and DIR/labels.json: a list of
{"file", "rule", "value"} for every planted value (the detector's finding
for that rule must contain the value). Deterministic for a seed. No value
here is a real credential: every one is random.
"""

import argparse
import base64
import json
import os
import random
import string
import zlib

A62 = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
UPPER_DIGITS = string.ascii_uppercase + string.digits
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)

    def s(self, n, alphabet=A62):
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def digits(self, n):
        return self.s(1, "123456789") + self.s(n - 1, string.digits)

    def b62(self, n, width):
        out = ""
        while n:
            out = B62[n % 62] + out
            n //= 62
        return out.rjust(width, "0")

    def github(self, prefix):
        body = self.s(30)
        return prefix + body + self.b62(zlib.crc32(body.encode()), 6)

    def b64url(self, data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def pem(self, kind):
        lines = [base64.b64encode(bytes(self.r.getrandbits(8) for _ in range(48))).decode() for _ in range(12)]
        return f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----"

    def luhn_card(self, prefix, length):
        digits = [int(c) for c in prefix] + [self.r.randrange(10) for _ in range(length - len(prefix) - 1)]
        total = 0
        for i, d in enumerate(reversed(digits)):
            if i % 2 == 0:
                d *= 2
                if d > 9:
                    d -= 9
            total += d
        digits.append((10 - total % 10) % 10)
        return "".join(map(str, digits))

    def iban(self, country, bban):
        rearranged = bban + country + "00"
        num = int("".join(str(int(c, 36)) for c in rearranged))
        check = 98 - num % 97
        return f"{country}{check:02d}{bban}"


def secrets(g):
    """(rule, value, line template with {v}, the part labeled) per detector."""
    jwt_header = g.b64url(b'{"alg":"HS256","typ":"JWT"}')
    jwt_payload = g.b64url(json.dumps({"sub": g.digits(8), "name": "test", "iat": 1700000000}).encode())
    jwt = f"{jwt_header}.{jwt_payload}.{g.s(43, A62 + '-_')}"
    slack_hook = f"hooks.slack.com/services/T{g.s(9, UPPER_DIGITS)}/B{g.s(9, UPPER_DIGITS)}/{g.s(24)}"
    discord_hook = f"discord.com/api/webhooks/{g.digits(18)}/{g.s(68, A62 + '-_')}"
    password = g.s(18)
    putty = (
        "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: deploy\nPublic-Lines: 2\n"
        + "\n".join(g.s(64, A62 + "+/") for _ in range(2))
        + "\nPrivate-Lines: 1\n"
        + g.s(44, A62 + "+/")
        + "\nPrivate-MAC: "
        + g.s(64, HEX)
        + "\n"
    )
    rows = [
        ("aws-access-key-id", g.r.choice(["AKIA", "ASIA"]) + g.s(16, string.ascii_uppercase + "234567"), "AWS_ACCESS_KEY_ID={v}"),
        ("aws-secret-access-key", g.s(40, A62 + "/+"), "aws_secret_access_key = {v}"),
        ("gcp-service-account", g.s(40, HEX), '"private_key_id": "{v}",'),
        ("google-api-key", "AIza" + g.s(35, A62 + "-_"), 'GOOGLE_API_KEY="{v}"'),
        ("azure-storage-key", g.s(86, A62 + "+/") + "==", "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={v};EndpointSuffix=core.windows.net"),
        ("azure-shared-access-key", g.s(43, A62 + "+/") + "=", "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey={v}"),
        ("azure-ad-client-secret", g.s(3, A62) + g.s(1, string.digits) + "Q~" + g.s(34, A62 + "_-.~"), 'AZURE_CLIENT_SECRET="{v}"'),
        ("digitalocean-token", "dop_v1_" + g.s(64, HEX), "DIGITALOCEAN_TOKEN={v}"),
        ("github-pat", g.github("ghp_"), "GITHUB_TOKEN={v}"),
        ("github-oauth-token", g.github("gho_"), 'token: "{v}"'),
        ("github-user-token", g.github("ghu_"), "Authorization: token {v}"),
        ("github-app-token", g.github("ghs_"), "GH_TOKEN={v}"),
        ("github-refresh-token", g.github("ghr_"), '"refresh_token": "{v}"'),
        ("github-fine-grained-pat", "github_pat_" + g.s(22) + "_" + g.s(59), "export GH_PAT={v}"),
        ("gitlab-pat", "glpat-" + g.s(20, A62 + "_-"), "GITLAB_TOKEN: {v}"),
        ("gitlab-deploy-token", "gldt-" + g.s(20, A62), "password: {v}"),
        ("gitlab-runner-token", "glrt-" + g.s(20, A62), 'token = "{v}"'),
        ("gitlab-trigger-token", "glptt-" + g.s(40, HEX), "TRIGGER={v}"),
        ("openai-api-key", "sk-" + g.s(20) + "T3BlbkFJ" + g.s(20), "OPENAI_API_KEY={v}"),
        ("openai-project-key", "sk-proj-" + g.s(100, A62 + "_-"), 'client = OpenAI(api_key="{v}")'),
        ("anthropic-api-key", "sk-ant-api03-" + g.s(93, A62 + "_-") + "AA", "ANTHROPIC_API_KEY={v}"),
        ("anthropic-admin-key", "sk-ant-admin01-" + g.s(93, A62 + "_-") + "AA", "x-api-key: {v}"),
        ("huggingface-token", "hf_" + g.s(34, string.ascii_letters), "HF_TOKEN={v}"),
        ("groq-api-key", "gsk_" + g.s(52), "GROQ_API_KEY={v}"),
        ("mistral-api-key", g.s(32), "MISTRAL_API_KEY={v}"),
        ("cohere-api-key", g.s(40), 'COHERE_API_KEY = "{v}"'),
        ("perplexity-api-key", "pplx-" + g.s(48), "PPLX={v}"),
        ("openrouter-api-key", "sk-or-v1-" + g.s(64, HEX), "OPENROUTER_API_KEY={v}"),
        ("xai-api-key", "xai-" + g.s(80), "XAI_API_KEY={v}"),
        ("replicate-api-token", "r8_" + g.s(37), "REPLICATE_API_TOKEN={v}"),
        ("stripe-secret-key", "sk_live_" + g.s(24), "stripe.api_key = '{v}'"),
        ("stripe-restricted-key", "rk_live_" + g.s(24), "STRIPE_KEY={v}"),
        ("stripe-webhook-secret", "whsec_" + g.s(32), "STRIPE_WEBHOOK_SECRET={v}"),
        ("slack-bot-token", "xoxb-" + g.digits(13) + "-" + g.digits(13) + "-" + g.s(24), "SLACK_BOT_TOKEN={v}"),
        ("slack-user-token", "xoxp-" + g.digits(13) + "-" + g.digits(13) + "-" + g.digits(13) + "-" + g.s(32, HEX), "SLACK_TOKEN={v}"),
        ("slack-app-token", "xapp-1-A" + g.s(10, UPPER_DIGITS) + "-" + g.digits(13) + "-" + g.s(64, HEX), "SLACK_APP_TOKEN={v}"),
        ("slack-webhook", slack_hook, "webhook_url: https://{v}"),
        ("discord-webhook", discord_hook, 'DISCORD_WEBHOOK="https://{v}"'),
        ("discord-bot-token", "M" + g.s(25) + "." + g.s(6, A62 + "-_") + "." + g.s(38, A62 + "-_"), "DISCORD_BOT_TOKEN={v}"),
        ("telegram-bot-token", g.digits(10) + ":AA" + g.s(33, A62 + "-_"), "TELEGRAM_BOT_TOKEN={v}"),
        ("twilio-api-key", "SK" + g.s(32, HEX), 'TWILIO_API_KEY = "{v}"'),
        ("sendgrid-api-key", "SG." + g.s(22, A62 + "-_") + "." + g.s(43, A62 + "-_"), "SENDGRID_API_KEY={v}"),
        ("mailgun-api-key", "key-" + g.s(32, HEX), "MAILGUN_API_KEY={v}"),
        ("mailchimp-api-key", g.s(32, HEX) + "-us" + str(g.r.randrange(1, 21)), "MAILCHIMP_KEY={v}"),
        ("npm-token", "npm_" + g.s(36), "//registry.npmjs.org/:_authToken={v}"),
        ("pypi-token", "pypi-AgEIcHlwaS5vcmc" + g.s(70, A62 + "-_"), "password = {v}"),
        ("crates-io-token", "cio" + g.s(32), "CARGO_REGISTRY_TOKEN={v}"),
        ("rubygems-api-key", "rubygems_" + g.s(48, HEX), ":rubygems_api_key: {v}"),
        ("dockerhub-pat", "dckr_pat_" + g.s(27, A62 + "-_"), "DOCKER_PASSWORD={v}"),
        ("url-password", password, "DATABASE_URL=postgres://app:{v}@db.internal:5432/app"),
        ("hashicorp-vault-token", "hvs." + g.s(90, A62 + "_-"), "VAULT_TOKEN={v}"),
        ("terraform-cloud-token", g.s(14) + ".atlasv1." + g.s(67, A62 + "_-"), 'token = "{v}"'),
        ("databricks-token", "dapi" + g.s(32, HEX), "DATABRICKS_TOKEN={v}"),
        ("shopify-token", "shpat_" + g.s(32, HEX), "SHOPIFY_ACCESS_TOKEN={v}"),
        ("linear-api-key", "lin_api_" + g.s(40), "LINEAR_API_KEY={v}"),
        ("postman-api-key", "PMAK-" + g.s(24, HEX) + "-" + g.s(34, HEX), "POSTMAN_API_KEY={v}"),
        ("grafana-service-account-token", "glsa_" + g.s(32) + "_" + g.s(8, HEX), "GRAFANA_TOKEN={v}"),
        ("newrelic-user-key", "NRAK-" + g.s(27, UPPER_DIGITS), "NEW_RELIC_API_KEY={v}"),
        ("sentry-auth-token", "sntrys_" + g.s(120, A62), "SENTRY_AUTH_TOKEN={v}"),
        ("supabase-token", "sbp_" + g.s(40, HEX), "SUPABASE_ACCESS_TOKEN={v}"),
        ("pulumi-access-token", "pul-" + g.s(40, HEX), "PULUMI_ACCESS_TOKEN={v}"),
        ("doppler-token", "dp.pt." + g.s(43), "DOPPLER_TOKEN={v}"),
        ("age-secret-key", "AGE-SECRET-KEY-1" + g.s(58, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"), "# {v}"),
        ("private-key", g.pem("RSA PRIVATE KEY"), "{v}"),
        ("private-key", g.pem("OPENSSH PRIVATE KEY"), "{v}"),
        ("private-key", g.pem("PRIVATE KEY"), "{v}"),
        ("private-key", g.pem("EC PRIVATE KEY"), "{v}"),
        ("private-key", g.pem("PGP PRIVATE KEY BLOCK"), "{v}"),
        ("putty-private-key", putty, "{v}"),
        ("jwt", jwt, "Authorization: Bearer {v}"),
        ("generic-secret", g.s(20), 'DB_PASSWORD = "{v}"'),
        ("generic-secret", g.s(24), "config.api_key = '{v}';"),
    ]
    return rows


def pii(g):
    first = g.r.choice(["jane", "john", "maria", "wei", "amir", "olga"])
    last = g.r.choice(["doe", "smith", "garcia", "chen", "khan", "petrova"])
    visa = g.luhn_card("4", 16)
    mc = g.luhn_card("5" + str(g.r.randrange(1, 6)), 16)
    amex = g.luhn_card(g.r.choice(["34", "37"]), 15)
    area = g.r.choice([n for n in range(1, 900) if n != 666])
    return [
        ("email", f"{first}.{last}{g.r.randrange(100)}@example-mail.com", "contact: {v}"),
        ("phone", f"+44 20 {g.r.randrange(1000, 9999)} {g.r.randrange(1000, 9999)}", "phone: {v}"),
        ("phone", f"({g.r.randrange(200, 999)}) {g.r.randrange(200, 999)}-{g.r.randrange(1000, 9999)}", "call {v} today"),
        ("credit-card", " ".join(visa[i:i + 4] for i in range(0, 16, 4)), "card={v}"),
        ("credit-card", mc, '"card_number": "{v}"'),
        ("credit-card", f"{amex[:4]} {amex[4:10]} {amex[10:]}", "amex {v}"),
        ("iban", g.iban("GB", "WEST" + g.s(14, string.digits)), "IBAN: {v}"),
        ("iban", g.iban("DE", g.s(18, string.digits)), "iban={v}"),
        ("us-ssn", f"{area:03d}-{g.r.randrange(1, 100):02d}-{g.r.randrange(1, 10000):04d}", "SSN {v}"),
    ]


CODE_LINES = [
    "def handler(event, context):",
    "    items = [x for x in event.get('records', []) if x]",
    "    logger.info('processed %d records', len(items))",
    "const client = new Client({ region: 'eu-west-1', retries: 3 });",
    "fn parse(input: &str) -> Result<Config, Error> {",
    "    let mut map = HashMap::with_capacity(16);",
    "if err != nil { return fmt.Errorf(\"open: %w\", err) }",
    "# TODO: move this to the settings module",
    "SELECT id, name FROM users WHERE created_at > now() - interval '1 day';",
    "    for key, value in sorted(params.items()):",
    "        headers[key.title()] = str(value)",
    "token_count = tokenizer.count(prompt)  # rough estimate",
    "password_policy = {'min_length': 12, 'require_digit': True}",
    "export const AUTH_HEADER = 'Authorization';",
]


def context_file(g, kind, plants):
    """A file of `kind` with each (template, value) planted among ordinary lines."""
    out = []
    for template, value in plants:
        for _ in range(g.r.randrange(3, 12)):
            out.append(g.r.choice(CODE_LINES))
        line = template.replace("{v}", value)
        if kind == "json":
            out.append(json.dumps({"event": "config", "value": line, "ts": 1700000000 + g.r.randrange(10**6)}))
        elif kind == "log":
            out.append(f"2026-11-30T10:{g.r.randrange(60):02d}:{g.r.randrange(60):02d}Z INFO loaded {line}")
        else:
            out.append(line)
    out.extend(g.r.choice(CODE_LINES) for _ in range(5))
    return "\n".join(out) + "\n"


def negatives(g, target_bytes):
    """Hard negatives until `target_bytes`: (name, text) pairs."""
    files = []
    total = 0
    makers = [
        ("uuids.txt", lambda: "\n".join(
            f"{g.s(8, HEX)}-{g.s(4, HEX)}-4{g.s(3, HEX)}-{g.s(1, '89ab')}{g.s(3, HEX)}-{g.s(12, HEX)}" for _ in range(2000))),
        ("gitlog.txt", lambda: "\n".join(
            f"commit {g.s(40, HEX)}\nAuthor: Dev <dev@example.invalid>\n\n    Fix parser edge case ({g.s(7, HEX)})\n" for _ in range(400))),
        ("SHA256SUMS", lambda: "\n".join(f"{g.s(64, HEX)}  dist/pkg-{i}.tar.gz" for i in range(1500))),
        ("styles.css", lambda: "\n".join(
            f".icon-{i} {{ background: url(data:image/png;base64,{base64.b64encode(bytes(g.r.getrandbits(8) for _ in range(300))).decode()}); }}"
            for i in range(200))),
        ("bundle.min.js", lambda: ";".join(
            f"var {g.s(2, string.ascii_letters)}{i}=function({g.s(1, 'abcdef')}){{return {g.s(1, 'abcdef')}.{g.s(6, string.ascii_lowercase)}({g.r.randrange(10**6)},\"{g.s(12, A62)}\")}}"
            for i in range(3000))),
        ("package-lock.json", lambda: json.dumps({"packages": {
            f"node_modules/{g.s(8, string.ascii_lowercase)}": {
                "version": f"{g.r.randrange(10)}.{g.r.randrange(20)}.{g.r.randrange(30)}",
                "resolved": f"https://registry.npmjs.org/{g.s(8, string.ascii_lowercase)}/-/x-1.0.0.tgz",
                "integrity": "sha512-" + base64.b64encode(bytes(g.r.getrandbits(8) for _ in range(64))).decode(),
            } for _ in range(800)}}, indent=2)),
        ("Cargo.lock", lambda: "\n".join(
            f'[[package]]\nname = "{g.s(8, string.ascii_lowercase)}"\nversion = "0.{g.r.randrange(30)}.{g.r.randrange(10)}"\n'
            f'source = "registry+https://github.com/rust-lang/crates.io-index"\nchecksum = "{g.s(64, HEX)}"\n' for _ in range(800))),
        ("fixtures.py", lambda: "\n".join([
            'password = "changeme"',
            'api_key = "your-api-key-here"',
            'token = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"',
            "AWS_ACCESS_KEY_ID = 'AKIAIOSFODNN7EXAMPLE'",
            'secret: "${SECRET_FROM_VAULT}"',
            'password: "<password>"',
            'DATABASE_URL = "postgres://user:password@localhost/db"',
            'client_secret = os.environ["CLIENT_SECRET"]',
            "auth_token = get_token(session, scope='read')",
        ] * 300)),
        ("app.log", lambda: "\n".join(
            f"2026-11-30T10:{g.r.randrange(60):02d}:{g.r.randrange(60):02d}.{g.r.randrange(1000):03d}Z INFO req={g.s(16, HEX)} "
            f"path=/api/v{g.r.randrange(1, 4)}/items/{g.r.randrange(10**6)} status=200 dur={g.r.randrange(1, 999)}ms "
            f"version=1.{g.r.randrange(30)}.{g.r.randrange(9)} order={g.r.randrange(10**9, 10**10)}" for _ in range(3000))),
        ("source.rs", lambda: "\n".join(g.r.choice(CODE_LINES) for _ in range(4000))),
    ]
    i = 0
    while total < target_bytes:
        name, make = makers[i % len(makers)]
        text = make() + "\n"
        files.append((f"{i:04d}-{name}", text))
        total += len(text)
        i += 1
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--negative-mb", type=float, default=12)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    g = Gen(args.seed)
    pos = os.path.join(args.out, "positive")
    neg = os.path.join(args.out, "negative")
    os.makedirs(pos, exist_ok=True)
    os.makedirs(neg, exist_ok=True)
    labels = []
    kinds = ["py", "env", "yaml", "log", "json"]
    for round_ in range(3):
        rows = secrets(g) + pii(g)
        g.r.shuffle(rows)
        for n, start in enumerate(range(0, len(rows), 6)):
            chunk = rows[start:start + 6]
            kind = kinds[(n + round_) % len(kinds)]
            if any("\n" in value for _, value, _ in chunk):
                # Keys span lines: planted in code as they are.
                kind = "py"
            name = f"r{round_}-{n:03d}.{kind}"
            plants = [(template, value) for _, value, template in chunk]
            with open(os.path.join(pos, name), "w") as f:
                f.write(context_file(g, kind, plants))
            for rule, value, template in chunk:
                # In JSON lines the value appears escaped: label it as written.
                shown = json.dumps(value)[1:-1] if kind == "json" else value
                labels.append({"file": f"positive/{name}", "rule": rule, "value": shown})
    for name, text in negatives(g, int(args.negative_mb * 1024 * 1024)):
        with open(os.path.join(neg, name), "w") as f:
            f.write(text)
    with open(os.path.join(args.out, "labels.json"), "w") as f:
        json.dump(labels, f, indent=1)


if __name__ == "__main__":
    main()
