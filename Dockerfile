# goproxy in a container: docker build -t goproxy . && docker run -p 12345:12345 -v goproxy-cache:/app/cache goproxy
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CACHE_DIR=/app/cache \
    PORT=12345

WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin goproxy \
 && mkdir -p /app/cache && chown goproxy:goproxy /app/cache
COPY goproxy.py config.yaml ./
COPY goproxy ./goproxy

USER goproxy
VOLUME /app/cache
EXPOSE 12345
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/health' % os.environ.get('PORT', '12345'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python3", "goproxy.py"]
