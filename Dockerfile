# One project image for every process of the stack: Airflow components, Celery workers,
# Dask scheduler and workers, Spark master, worker and Spark Connect server. Everything runs
# the same pinned library versions (requirements.txt).
FROM apache/airflow:3.3.2-python3.11

USER root
# Spark 4 needs Java 17 or 21; procps for process inspection in health checks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
 && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64

USER airflow
COPY --chown=airflow:root requirements.txt /opt/project/requirements.txt
RUN pip install --no-cache-dir -r /opt/project/requirements.txt

# The project code; docker-compose also mounts dags/, plugins/ and include/ for development.
COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
COPY --chown=airflow:root include /opt/airflow/include
COPY --chown=airflow:root data /opt/airflow/data
ENV PYTHONPATH=/opt/airflow \
    SPARK_HOME=/home/airflow/.local/lib/python3.11/site-packages/pyspark
