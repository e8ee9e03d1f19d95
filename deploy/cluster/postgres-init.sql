-- Run once by the postgres image on an empty data directory: the logger's database, beside
-- the state service's (POSTGRES_DB). Both belong to POSTGRES_USER.
CREATE DATABASE plantd_logger OWNER plantd;
