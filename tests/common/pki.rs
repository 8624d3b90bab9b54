//! A throwaway certificate authority for TLS tests, made at test time with rcgen.

use std::path::PathBuf;

use pushwire::client::TlsOptions;

/// A CA and a server certificate it signed, as PEM files in a fresh temporary folder, removed
/// when dropped: `ca.pem`, `server.pem` (the server's certificate, then the CA's) and
/// `server.key`.
pub struct TestPki {
    pub dir: PathBuf,
}

impl TestPki {
    /// A CA named after `tag` and a server certificate for `names` (DNS names or IP addresses).
    pub fn new(tag: &str, names: &[&str]) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let dir = std::env::temp_dir().join(format!("pushwire-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, format!("pushwire test CA {tag}"));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, &ca_key);
        let server_key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let server_cert = CertificateParams::new(names).unwrap().signed_by(&server_key, &issuer).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), server_cert.pem() + &ca_cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
        TestPki { dir }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// What a client trusting this CA uses.
    pub fn tls(&self) -> TlsOptions {
        TlsOptions { extra_roots_pem: Some(self.ca()) }
    }

    /// `--tls-cert CERT --tls-key KEY`.
    pub fn flags(&self) -> Vec<String> {
        let path = |p: PathBuf| p.to_str().unwrap().to_string();
        vec!["--tls-cert".into(), path(self.cert()), "--tls-key".into(), path(self.key())]
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
