# kedge edge proxy. Build: docker build -t kedge .   Run: docker run -p 8080:8080 kedge
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kedge ./kedge
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin kedge
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001:10001
EXPOSE 8080 8443 9901
# Config is mounted (e.g. a ConfigMap) at /etc/kedge/edge.yaml; edits are picked up live.
ENTRYPOINT ["kedge", "serve"]
CMD ["--config", "/etc/kedge/edge.yaml"]
