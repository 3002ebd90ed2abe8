-- I-CSCF tables (sqlite) for the lab: the one S-CSCF the I-CSCF may pick when the HSS answers
-- UAR/LIR with Server-Capabilities instead of a Server-Name.
-- Schema as /usr/share/doc/kamailio/examples/ims/icscf/icscf.sql (MySQL there).
CREATE TABLE nds_trusted_domains (id INTEGER PRIMARY KEY AUTOINCREMENT, trusted_domain VARCHAR(83) NOT NULL DEFAULT '');
CREATE TABLE s_cscf (id INTEGER PRIMARY KEY AUTOINCREMENT, name VARCHAR(83) NOT NULL DEFAULT '', s_cscf_uri VARCHAR(83) NOT NULL DEFAULT '');
CREATE TABLE s_cscf_capabilities (id INTEGER PRIMARY KEY AUTOINCREMENT, id_s_cscf INTEGER NOT NULL DEFAULT 0, capability INTEGER NOT NULL DEFAULT 0);
CREATE INDEX idx_capability ON s_cscf_capabilities (capability);
CREATE INDEX idx_id_s_cscf ON s_cscf_capabilities (id_s_cscf);
INSERT INTO nds_trusted_domains (trusted_domain) VALUES ('@DOMAIN@');
INSERT INTO s_cscf (name, s_cscf_uri) VALUES ('scscf', 'sip:scscf.@DOMAIN@:@SCSCF_PORT@');
INSERT INTO s_cscf_capabilities (id_s_cscf, capability) VALUES (1, 0);
INSERT INTO s_cscf_capabilities (id_s_cscf, capability) VALUES (1, 1);
